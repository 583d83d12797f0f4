"""Architecture: services share no code but ``booking`` and ``resilience``, and ``resilience`` none of theirs."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")


def imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.setdefault(node.module.split(".")[0], set()).add(str(path.relative_to(ROOT)))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name.split(".")[0], set()).add(
                        str(path.relative_to(ROOT))
                    )
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service):
    others = set(SERVICES) - {service}
    imports = imported_top_levels(service)
    assert {name: files for name, files in imports.items() if name in others} == {}


@pytest.mark.parametrize("package", ["resilience", "booking"])
def test_shared_packages_import_no_service(package):
    imports = imported_top_levels(package)
    assert {name: files for name, files in imports.items() if name in SERVICES} == {}


@pytest.mark.parametrize("package", [*SERVICES, "resilience", "booking", "chaos"])
def test_nothing_of_the_services_imports_the_workshop_layer(package):
    """The stack, scenarios, labs and console are tooling around the services: no service,
    and nothing a service runs, may depend on them."""
    assert "workshop" not in imported_top_levels(package)


def test_the_workshop_layer_reaches_the_services_only_through_their_commands_and_apis():
    imports = imported_top_levels("workshop")
    assert {name: files for name, files in imports.items() if name in SERVICES} == {}
