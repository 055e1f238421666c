from django import forms


class DonationForm(forms.Form):
    name = forms.CharField(max_length=100)
    amount = forms.IntegerField(min_value=1, max_value=100_000, help_text="In cents.")
