"""Command-line options generated from config dataclasses: one place for a setting and its help.

A config field declares its flag with `option(default, help, ...)` (the help text lives in the
field's metadata); `add_config_arguments(parser, Config)` adds one flag per field, grouped, with
the field's default (or a preset's), and `config_from_args(Config, args)` builds the config back.
Fields without CLI metadata are left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from sare_tf.registry import PRECISION_POLICIES, RUNTIME_KINDS


def option(
    default,
    help: str,
    *,
    group: str = "options",
    flag: str | None = None,
    choices=None,
    metavar=None,
    required: bool = False,
    nargs=None,
    type=None,
    switch: str | None = None,
    repeat: bool = False,
    from_cli=None,
    cli_default=None,
):
    """A dataclass field with its command-line flag.

    Args:
        default: the field's default.
        help: what the setting does (the flag's help; "(default: ...)" is added).
        group: the parser's argument group.
        flag: the flag (default `--field-name`); a name without dashes makes a positional
            argument (its metavar), e.g. `flag="SRC", nargs="?"`.
        choices, metavar, required, nargs, type: as for `argparse.add_argument`.
        switch: for a bool field: "on" (`--flag` sets True) or "off" (`--flag` sets False).
        repeat: for a tuple field: the flag may be given again, each time adding one value.
        from_cli: converts the parsed value to the field's value (e.g. "all" -> None).
        cli_default: the flag's own default when it differs in kind from the field's (e.g.
            `--quiet` False for `verbose=1`).
    """
    metadata = {
        "cli": {
            "help": help, "group": group, "flag": flag, "choices": choices, "metavar": metavar,
            "required": required, "nargs": nargs, "type": type, "switch": switch, "repeat": repeat,
            "from_cli": from_cli, "cli_default": cli_default,
        }
    }  # fmt: skip
    if isinstance(default, list | dict | set):
        raise ValueError("Use immutable defaults (tuples) for config fields.")
    return dataclasses.field(default=default, metadata=metadata)


def _flag(field) -> str:
    return field.metadata["cli"]["flag"] or "--" + field.name.replace("_", "-")


def _scalar_type(field, config_class):
    hints = typing.get_type_hints(config_class)
    hint = hints.get(field.name)
    for candidate in (int, float, str):
        if hint is candidate or candidate in typing.get_args(hint):
            return candidate
    return str


def cli_fields(config_class, names=None) -> list:
    """The fields of `config_class` that have a flag (those in `names`, in that order)."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if "cli" in f.metadata}
    if names is None:
        return list(fields.values())
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(f"{config_class.__name__} has no command-line fields {missing}.")
    return [fields[n] for n in names]


def add_config_arguments(
    parser, config_class, names=None, defaults=None, unset: bool = False
) -> None:
    """Adds one flag per CLI field of `config_class` (or of `names`), in argument groups.

    Args:
        parser: an `argparse.ArgumentParser`.
        config_class: the dataclass.
        names: only these fields (default: every field with a flag).
        defaults: an instance whose values are the flags' defaults (a preset); default the
            class's own defaults.
        unset: the flags default to None (switches too), so that only the flags given on the
            command line replace a preset chosen later (`config_from_args(skip_unset=True)`);
            the help still shows `defaults`' values.
    """
    groups = {}
    for field in cli_fields(config_class, names):
        spec = field.metadata["cli"]
        if spec["group"] not in groups:
            groups[spec["group"]] = parser.add_argument_group(spec["group"])
        default = getattr(defaults, field.name) if defaults is not None else field.default
        if spec["cli_default"] is not None:
            default = spec["cli_default"]
        kwargs = {"dest": field.name}
        if spec["switch"] == "on":
            kwargs.update(action="store_true", default=None if unset else bool(default))
            shown = ""
        elif spec["switch"] == "off":
            kwargs.update(action="store_false", default=None if unset else bool(default))
            shown = ""
        else:
            kwargs.update(
                default=list(default) if isinstance(default, tuple) else default,
                type=spec["type"] or _scalar_type(field, config_class),
            )
            for key in ("choices", "metavar", "nargs", "required"):
                if spec[key]:
                    kwargs[key] = spec[key]
            if spec["repeat"]:
                kwargs["action"] = "append"
            if "metavar" not in kwargs and "choices" not in kwargs:
                # named after the flag, not the field (`--batch-wait-ms BATCH_WAIT_MS`)
                kwargs["metavar"] = _flag(field).lstrip("-").replace("-", "_").upper()
            if unset:  # a required flag may come from the base config instead (checked later)
                kwargs.pop("required", None)
                kwargs["default"] = None
            elif spec["required"]:
                kwargs.pop("default")
            shown = (
                "" if spec["required"] or default in (None, ()) else f" (default: {_show(default)})"
            )
        if not _flag(field).startswith("-"):  # a positional argument: argparse names its dest
            kwargs.pop("dest")
            kwargs.pop("required", None)
            groups[spec["group"]].add_argument(field.name, help=spec["help"] + shown, **kwargs)
            continue
        groups[spec["group"]].add_argument(_flag(field), help=spec["help"] + shown, **kwargs)


def _show(value) -> str:
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


def config_from_args(
    config_class, args: argparse.Namespace, base=None, names=None, skip_unset: bool = False
):
    """The config the parsed flags describe (`base`'s values for fields without a flag, and,
    with `skip_unset`, for flags left at None)."""
    values = {}
    for field in cli_fields(config_class, names):
        if not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        if skip_unset and value is None:
            continue
        convert = field.metadata["cli"]["from_cli"]
        if convert is not None:
            value = convert(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    # Without a base, the flags' values make the config at once (its checks see them all).
    config = config_class(**values) if base is None else dataclasses.replace(base, **values)
    missing = [
        _flag(field)
        for field in cli_fields(config_class, names)
        if field.metadata["cli"]["required"] and getattr(config, field.name) is None
    ]
    if missing:
        raise ValueError(f"{', '.join(missing)} is required.")
    return config


# The shared flag vocabulary: a flag means one thing in every command that has it. Each
# function returns a fresh field (a dataclass field belongs to one class).

MODEL_HELP = (
    ".keras file, SavedModel or TF Serving base path (its newest version), or an ONNX / LiteRT "
    "export (sare-tf export --format onnx|litert)"
)
RUNTIMES = tuple(RUNTIME_KINDS)


def model_option(help: str = MODEL_HELP, *, many: bool = False):
    """`--model PATH` (`many`: one or more paths), required."""
    return option(
        None, help, group="model", flag="--model", metavar="PATH", required=True,
        nargs="+" if many else None, type=str,
    )  # fmt: skip


def runtime_option():
    """`--runtime tf|onnx|litert`: refuse a model that is not this runtime's artefact."""
    return option(
        None, "refuse a --model that is not this runtime's artefact: tf (.keras / SavedModel), "
        "onnx or litert (sare-tf export --format onnx|litert); default: whatever the path is",
        group="model", choices=RUNTIMES,
    )  # fmt: skip


def precision_option(help: str = "compute precision for .keras models (default: as saved)"):
    """`--precision`, the Keras dtype policy a model runs under."""
    return option(None, help, group="model", choices=PRECISION_POLICIES)


def image_size_option(help: str, default: tuple[int, int] | None = None):
    """`--image-size H W` (None: the command's own rule, told by `help`)."""
    return option(default, help, group="model", nargs=2, type=int, metavar=("H", "W"))


def batch_size_option(default: int, help: str = "images per model call"):
    """`--batch-size N`."""
    return option(default, help, group="model")


def dataset_option(help: str, *, flag: str = "--dataset", required: bool = True):
    """A dataset path: a .mat dbStruct, a .csv or a dataset folder (`GeoDataset.load`)."""
    return option(None, help, group="data", flag=flag, metavar="DATASET", required=required)


def image_root_option():
    """`--image-root DIR`, the folder a dataset's image paths are relative to."""
    return option(None, "folder the dataset's image paths are relative to", group="data")


def out_option(default: str | None, help: str, *, metavar: str = "DIR"):
    """`--out PATH`, where a command writes (required when `default` is None)."""
    return option(default, help, group="output", metavar=metavar, required=default is None)


def quiet_option():
    """`--quiet`: no progress bars (log lines too, `sare_tf.cli`)."""
    return option(False, "no progress bars", group="output", switch="on")


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """`--quiet` (results and errors only), for a parser that has none of its own yet."""
    try:
        parser.add_argument(
            "--quiet",
            action="store_true",
            help="no progress output or log lines: results and errors only",
        )
    except argparse.ArgumentError:
        pass  # the parser's own --quiet (same meaning, e.g. from a config's quiet field)
