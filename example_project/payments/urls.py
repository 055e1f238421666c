from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("charges", views.ChargeViewSet, basename="charge")

urlpatterns = [
    path("api/", include(router.urls)),
    path("donate/", views.donate, name="donate"),
    path("donate/thanks/<int:pk>/", views.donation_thanks, name="donation-thanks"),
]
