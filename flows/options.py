"""CLI options derived from the pydantic configs, plus ``--config FILE.yaml`` for any of them.

A flow's configuration is one pydantic model (also its Prefect UI form).  Its fields — nested
models flattened, ``sampling.temperature`` becoming ``--temperature`` — are the command's
options, so a new field needs no hand-written flag.  Values come from the model's defaults,
then the YAML file, then the flags; pydantic validates the result, and an error names the flag
(or the file and field) it came from.  List fields take repeated flags and comma-separated
values (``--benchmarks toy,mbpp``).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

import typer
from pydantic import BaseModel, ValidationError

from codealign.tasks.errors import CodealignError

# Flags that read better than their field names (pass@k's k values are --k 1,10).
FLAG_NAMES = {"ks": "k"}


class ConfigError(CodealignError, ValueError):
    """A configuration value that does not validate; the message names the flag or file."""


@dataclass(frozen=True)
class ConfigOption:
    path: tuple[str, ...]  # field path in the config: ("sampling", "temperature")
    name: str  # Python parameter name: temperature
    kind: type  # str, int, float or bool
    many: bool  # a list field
    help: str
    old_name: str | None = None  # a renamed field's old name: its flag still works, for one release

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag, *(("--" + self.old_name.replace("_", "-"),) if self.old_name else ()))


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar(annotation: Any) -> type:
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0])
    return annotation if annotation in (int, float, bool) else str


def config_options(model: type[BaseModel], skip: tuple[str, ...] = (), prefix: tuple[str, ...] = ()
                   ) -> list[ConfigOption]:
    """One option per leaf field of ``model`` (nested models flattened), except ``skip``."""
    options = []
    for field_name, info in model.model_fields.items():
        if field_name in skip:
            continue
        annotation = _unwrap_optional(info.annotation)
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            options += config_options(annotation, skip, (*prefix, field_name))
            continue
        many = typing.get_origin(annotation) is list
        kind = _scalar(typing.get_args(annotation)[0] if many else annotation)
        help_text = info.description or ""
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if typing.get_origin(annotation) is dict:
            continue  # a section of free-form settings (TRL's sft:/dpo:): set in a --config file
        options.append(ConfigOption((*prefix, field_name), FLAG_NAMES.get(field_name, field_name), kind, many,
                                    help_text, extra.get("old_name")))
    names = [o.name for o in options]
    clashes = {n for n in names if names.count(n) > 1}
    if clashes:
        raise TypeError(f"{model.__name__}: fields {sorted(clashes)} would share a flag")
    return options


def with_config_options(model: type[BaseModel], on_error: Callable[[str], Any], skip: tuple[str, ...] = (),
                        read_file: Callable[[Path], dict[str, Any]] | None = None,
                        ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a typer command: it gains ``--config`` and an option per field of ``model``, and
    receives the validated config as its ``config`` argument (its other parameters stay).  A
    config that does not validate goes to ``on_error`` with a message naming the flag or file.
    ``read_file`` reads the ``--config`` file instead of :func:`read_config_file` (``train`` also
    takes TRL's own YAML files)."""
    options = config_options(model, skip)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "config"]
        own_names = {p.name for p in own}
        added = [inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[Path | None, typer.Option("--config", help="YAML file with any of these settings "
                                                              "(nested as in the config; flags override it)")])]
        for o in options:
            if o.name in own_names:
                raise TypeError(f"{command.__name__}: parameter {o.name!r} clashes with a config option")
            kind: Any = list[str] if o.many else o.kind  # "1,10": split here, converted by pydantic
            added.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=Annotated[kind | None, typer.Option(*o.flags, help=o.help)]))

        def wrapper(**kwargs: Any) -> Any:
            given = {o.name: kwargs.pop(o.name) for o in options}
            config_file = kwargs.pop("config_file")
            try:
                config = build_config(model, options, given, config_file, skip, read_file)
            except ConfigError as exc:
                return on_error(str(exc))
            return command(config=config, **kwargs)

        params = [*own, *added]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
        return wrapper

    return decorate


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def merge_settings(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (merge_settings(merged[key], value)
                       if isinstance(value, dict) and isinstance(merged.get(key), dict) else value)
    return merged


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of settings, got {type(data).__name__}")
    return data


def build_config(model: type[BaseModel], options: list[ConfigOption], given: dict[str, Any],
                 config_file: Path | None, skip: tuple[str, ...] = (),
                 read_file: Callable[[Path], dict[str, Any]] | None = None) -> BaseModel:
    """Defaults < ``config_file`` < flags, validated by ``model``."""
    from_file = (read_file or read_config_file)(config_file) if config_file else {}
    for name in skip:
        if name in from_file:
            raise ConfigError(f"{config_file}: {name!r} cannot be set in a config file here")
    from_flags: dict[str, Any] = {}
    for o in options:
        value = given.get(o.name)
        if value is None or (o.many and not value):
            continue
        if o.many:
            value = [part.strip() for v in value for part in str(v).split(",") if part.strip()]
        _set(from_flags, o.path, value)
    try:
        return model.model_validate(merge_settings(from_file, from_flags))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        option = next((o for o in options if loc[: len(o.path)] == o.path), None)
        field = ".".join(loc)
        message = err["msg"]
        if option is not None and option.name in given and given[option.name] not in (None, []):
            raise ConfigError(f"{option.flag}: {message}") from None
        if config_file is not None:
            raise ConfigError(f"{config_file}: {field}: {message}") from None
        raise ConfigError(f"{option.flag if option else field}: {message}") from None
