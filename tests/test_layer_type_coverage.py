"""Every declared layer type (compiler.layer_types) is complete: the runtime has its unit, and
the ONNX exporter has its converter or says why it has none. Registries refuse duplicates."""

import pytest

from compiler.layer_types import (ONE_IN_ONE_OUT, TRAITS, declaration, declare,
                                  declared_types)
from runtime.layers.registry import register, registered_types, unit_for

# Declared types whose runtime unit is still missing, each with the work that adds it. A type
# leaves this table when its unit lands; a new entry needs a reason as specific as these.
UNITS_PENDING = {}


@pytest.mark.parametrize("type_name", sorted(declared_types()))
def test_every_declared_type_has_a_runtime_unit(type_name):
    if type_name in UNITS_PENDING:
        assert unit_for(type_name) is None, f"{type_name} has a unit now: drop it from the table"
        return
    assert unit_for(type_name) is not None, f"declared type {type_name} has no runtime unit"


def test_every_unit_is_declared():
    assert set(registered_types()) <= declared_types()


@pytest.mark.parametrize("type_name", sorted(declared_types()))
def test_every_declared_type_has_a_converter_or_a_reason(type_name):
    onnx_export = pytest.importorskip("runtime.onnx_export")
    exportable = type_name in onnx_export.exportable_types()
    reason = onnx_export.unexportable_reason(type_name)
    problem = "a converter and a reason" if exportable else "neither a converter nor a reason"
    assert exportable != (reason is not None), f"{type_name}: {problem}"


def test_declarations_state_known_traits_only():
    for name in declared_types():
        assert declaration(name).traits <= set(TRAITS), name


def test_a_type_declared_twice_is_refused():
    existing = declaration("ReLU").rule

    def other_rule(layer, bottoms, context):
        return None

    with pytest.raises(ValueError, match="'ReLU' is declared twice"):
        declare("ReLU", counts=ONE_IN_ONE_OUT)(other_rule)
    assert declaration("ReLU").rule is existing
    with pytest.raises(ValueError, match="unknown layer traits"):
        declare("NoSuchType", counts=ONE_IN_ONE_OUT, traits={"shiny"})


def test_a_unit_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'ReLU' is registered twice"):
        register("ReLU")(type("OtherReLU", (), {}))


def test_a_converter_registered_twice_is_refused():
    onnx_export = pytest.importorskip("runtime.onnx_export")
    with pytest.raises(ValueError, match="'ReLU' has two ONNX converters"):
        onnx_export.converter("ReLU")(lambda ctx: None)
