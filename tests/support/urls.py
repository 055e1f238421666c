from typing import Any

from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from django_idempotency.observers.prometheus import metrics_view

from . import client_views, conformance_views, views

router = SimpleRouter()
router.register("charges", views.DRFChargeViewSet, basename="charge")

urlpatterns: list[Any] = [
    path("admin/", admin.site.urls),
    path("metrics/", metrics_view),
    path("middleware/", views.plain),
    path("decorator/", views.decorated),
    path("decorator-strict/", views.decorated_strict),
    path("async/", views.decorated_async),
    path("exempt/", views.exempt),
    path("cbv/", views.ClassBased.as_view()),
    path("drf/", views.DRFCharge.as_view()),
    path("api/", include(router.urls)),
    path("db/", views.db_counted),
    path("durable/", views.durable_counted),
    path("durable-drf/", views.DurableDRF.as_view()),
    path("async-plain/", views.async_plain),
    path("async-decorated/", views.async_decorated),
    path("deploy/", views.deploy_counted),
    path("deploy-async/", views.deploy_counted_async),
    path("conformance/unprotected/", conformance_views.unprotected),
    path("conformance/rerendering/", conformance_views.rerendering),
    path("conformance/rejecting/", conformance_views.rejecting),
    path("conformance/body-ignoring/", conformance_views.body_ignoring),
    path("client/counted/", client_views.counted),
    path("client/counted-reject/", client_views.counted_reject),
]
