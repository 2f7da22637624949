"""Caffe layer type name -> the unit (a CaffeLayer subclass) that builds and runs it."""

_UNITS = {}


def register(*type_names):
    """Class decorator: `@register("Convolution")` makes the class the unit for that type."""
    def decorate(cls):
        for name in type_names:
            if name in _UNITS and _UNITS[name] is not cls:
                raise ValueError(f"layer type {name!r} is registered twice: "
                                 f"{_UNITS[name].__name__} and {cls.__name__}")
            _UNITS[name] = cls
        return cls
    return decorate


def unit_for(type_name):
    """The registered unit class for a type, or None."""
    _load_builtin_units()
    return _UNITS.get(type_name)


def registered_types():
    _load_builtin_units()
    return sorted(_UNITS)


_loaded = False


def _load_builtin_units():
    # Importing the unit modules registers them; done lazily so that importing the registry
    # from a unit module never recurses.
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil
    from runtime import layers
    for module in pkgutil.iter_modules(layers.__path__):
        if module.name not in ("registry", "base"):
            importlib.import_module(f"runtime.layers.{module.name}")
    # Units defined outside runtime/ (the applications' data layers, a user's own layers).
    from compiler.shapes import load_plugins
    load_plugins("lrcn.layers")
