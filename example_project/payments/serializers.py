# mypy: disallow-subclassing-any=False
# (DRF ships no type hints; its classes are Any to mypy.)
from rest_framework import serializers

from .models import Charge


class ChargeSerializer(serializers.ModelSerializer):
    amount = serializers.IntegerField(min_value=1, max_value=1_000_000)
    currency = serializers.ChoiceField(choices=["eur", "usd", "gbp"], default="eur")

    class Meta:
        model = Charge
        fields = [
            "id",
            "amount",
            "currency",
            "description",
            "status",
            "gateway_reference",
            "created",
        ]
        read_only_fields = ["status", "gateway_reference", "created"]
