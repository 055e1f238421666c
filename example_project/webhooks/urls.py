from django.urls import path

from . import views

urlpatterns = [path("payments/", views.payment_events, name="payment-events")]
