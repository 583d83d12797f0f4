from io import StringIO

import pytest
from django.core.management import call_command

from inventory.models import Show
from recommendations.selectors import recommendations_for


@pytest.mark.django_db
def test_demo_data_loads_once_and_agrees_across_services():
    out = StringIO()
    call_command("demo_data", stdout=out)
    assert "inventory: 8 shows" in out.getvalue()
    call_command("demo_data", stdout=StringIO())
    assert Show.objects.count() == 8
    recommended = [r["show_id"] for r in recommendations_for(show_id=1)]
    assert recommended == [4, 7, 8]
    assert set(recommended) <= set(Show.objects.values_list("id", flat=True))
