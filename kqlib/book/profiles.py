"""Run profiles (``kqlib/book/profiles.toml``) and the parameters a chapter receives from them.

A chapter declares its parameters, with defaults, in the notebook cell tagged ``parameters``. The
parameters passed to it are: the profile's common defaults, then the profile's overrides for that chapter
(``[profile.P.chapters."PREFIX"]``), then the user's overrides, then ``profile=<name>``; only names the
chapter declares are passed, and each value must have the type of the declared default (an int is
accepted where a float is declared). User overrides that the chapter does not declare are errors.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any, Mapping

from kqlib.attribution.quadrature import RULES
from kqlib.errors import ParameterError
from kqlib.paper import path_rules

PROFILES_FILE = Path(__file__).with_name("profiles.toml")
#: Profile keys that configure the runner rather than the chapters.
RUNNER_KEYS = {"description", "cell_timeout", "chapters", "executor", "address"}


def _read_profiles() -> dict:
    with open(PROFILES_FILE, "rb") as f:
        return tomllib.load(f).get("profile", {})


def profile_names() -> list[str]:
    return list(_read_profiles())


def load_profile(name: str) -> dict:
    """The profile table ``name`` (with ``name`` added); unknown names raise :class:`ParameterError`."""
    profiles = _read_profiles()
    if name not in profiles:
        lines = [f"Unknown profile {name!r}. Profiles in {PROFILES_FILE}:"]
        lines += [f"  {k:7s} {v.get('description', '')}" for k, v in profiles.items()]
        raise ParameterError("\n".join(lines))
    prof = dict(profiles[name])
    for key, value in [(k, v) for k, v in prof.items() if k not in RUNNER_KEYS] + [
            (k, v) for prefix, table in (prof.get("chapters") or {}).items() for k, v in table.items()]:
        if key not in VALUE_RULES:
            raise ParameterError(f"{PROFILES_FILE}: profile {name!r} sets {key!r}, which is not a known parameter "
                                 f"(known: {', '.join(sorted(VALUE_RULES))}).")
        check_value(key, value, f"profile {name!r} in {PROFILES_FILE.name}")
    prof["name"] = name
    prof.setdefault("cell_timeout", 0)
    prof.setdefault("chapters", {})
    return prof


# ----------------------------------------------------------------------------------------- chapter side


def _parameters_cell_source(chapter: Path) -> str:
    if chapter.suffix == ".py":
        import jupytext  # heavy: jupytext, only to read a chapter's parameters cell

        nb = jupytext.read(chapter)
    elif chapter.suffix == ".ipynb":
        import nbformat  # heavy: nbformat, only to read a chapter's parameters cell

        nb = nbformat.read(chapter, as_version=4)
    else:
        raise ParameterError(f"{chapter} is not a notebook chapter (.py percent format or .ipynb)")
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell.source
    return ""


def declared_parameters(chapter: str | Path) -> dict[str, Any]:
    """``{name: default}`` from the chapter's ``parameters`` cell (``None`` when not a literal)."""
    chapter = Path(chapter)
    source = _parameters_cell_source(chapter)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"{chapter}: the parameters cell is not valid Python: {exc}") from exc
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        try:
            out[target] = ast.literal_eval(value)
        except ValueError:
            out[target] = None
    return out


def parse_value(text: str) -> Any:
    """A command-line value as a Python literal (int, float, bool, list, ...), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["n=5", "models=['gpt2']"]`` -> ``{"n": 5, "models": ["gpt2"]}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ParameterError(f"Parameter {item!r} is not of the form NAME=VALUE (e.g. -p steps=20).")
        out[name.strip()] = parse_value(value.strip())
    return out


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        inner = {type(v).__name__ for v in value}
        return f"list of {inner.pop()}" if len(inner) == 1 else "list"
    return type(value).__name__


def coerce(name: str, value: Any, default: Any, where: str) -> Any:
    """``value`` checked against the type of ``default``; a comma-separated string is accepted for a list."""
    if default is None:
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
        if not all(items):
            raise ParameterError(f"Parameter {name!r} ({where}) is the list {value!r} with an empty item: separate "
                                 f"the values by single commas, or write [] for an empty list.")
        value = [parse_value(v) for v in items]
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        kinds = {type(v) for v in default}
        if ok and len(kinds) == 1:
            kind = kinds.pop()
            ok = all(isinstance(v, kind) and not (kind is int and isinstance(v, bool)) for v in value)
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ParameterError(
            f"Parameter {name!r} ({where}) must be a {_type_name(default)} like its default "
            f"{default!r}; got {value!r} ({_type_name(value)})."
        )
    return value


_METHODS = ("ig", "sig", "amig")


def _one_of(options):
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _distinct(v):
    repeated = sorted({str(x) for x in v if list(v).count(x) > 1})
    return f"lists {', '.join(repeated)} more than once (it would count twice); give each once" if repeated else None


def _methods(v):
    if not v:
        return "must name at least one method"
    bad = [m for m in v if m not in _METHODS]
    return f"has unknown method(s) {bad}: choose from {', '.join(_METHODS)}" if bad else _distinct(v)


def _at_least(low: float, note: str = ""):
    return lambda v: None if v >= low else f"must be >= {low:g}{note}"


def _share(v):
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1] (a share, e.g. 0.3 for 30 %)"


def _fraction(v):  # a per-query threshold: keep neurons with score > t * max; t = 1 would keep none
    return None if 0.0 <= v < 1.0 else "must be in [0, 1) (score > t * max; 1 keeps none; e.g. 0.2 for 20 %)"


def _each(rule, what: str = "every value"):
    def check(v):
        if not v:
            return "must list at least one value"
        bad = [x for x in v if rule(x)]
        return f"has {bad}: {what} {rule(bad[0])}" if bad else _distinct(v)
    return check


def _path_setting(v):  # chapter 06: "adaptive" or RULE-N (kqlib.paper.path_rules.setting)
    try:
        path_rules.setting(v)
    except ParameterError:
        return "must be 'adaptive' or RULE-N with RULE riemann or gauss and N >= 1 (e.g. 'riemann-20')"
    return None


def _boolean(v):
    return None


_NOT_NEGATIVE = _at_least(0)

#: Every chapter and profile parameter, in one place: name -> check(value) -> problem or None (the type comes
#: from the chapter's declared default, :func:`coerce`). A value that means something else (``steps=0``,
#: ``t_threshold=1.5``, ``static_threshold=30`` meant as 30 %, ``n_boot=0``, a repeated relation) is refused
#: before any chapter runs, naming the parameter, the value and the allowed range. A profile key missing here is
#: refused (:func:`load_profile`); ``tests/book/test_build_integrity.py`` checks that every parameter of the book's
#: chapters is declared here.
VALUE_RULES = {
    # data and models
    "models": lambda v: "must name at least one model" if not v else _distinct(v),
    "relations": _distinct,
    "site_relations": _distinct,
    "n_facts_per_relation": _at_least(0, " (0 = every fact)"),
    "n_site_facts": _at_least(1),
    "n_edit_facts": _at_least(0, " (0 = every fact)"),
    "n_queries": _at_least(1),
    "max_queries": _at_least(0, " (0 = every query)"),
    "query_filter": _one_of(("correct", "all")),  # kqlib.paper.pararel.QUERY_FILTERS, the book's answer filter
    "seed": _NOT_NEGATIVE,
    # attribution
    "steps": _at_least(1, " (path points; 1 = attribution patching)"),
    "rule": _one_of(RULES),
    "rules": _each(_one_of(RULES)),
    "tol": lambda v: None if 0.0 < v < float("inf") else "must be a finite number > 0 (rule='adaptive': estimated "
                                                         "max abs error / max |score|, e.g. 0.01)",
    "counts": _each(_at_least(1), "every point count"),
    "settings": _each(_path_setting, "each path setting"),
    "cheap": _each(_path_setting, "each cheap ranking"),
    "paper_rule": lambda v: None if v == "" else _path_setting(v),  # chapter 01: "" = no comparison
    "reference_points": _at_least(1),
    "methods": _methods,
    "method": _one_of(_METHODS),
    "kn_method": _one_of(_METHODS),
    "edit_method": _one_of(_METHODS),
    "site_methods": _each(_one_of(_METHODS)),
    "site": _one_of(("post", "pre")),
    "compare_site": _one_of(("post", "pre")),
    # thresholds and shares
    "t_threshold": _fraction,
    "cas_threshold": _fraction,
    "synapse_t": _fraction,
    "t_grid": _each(_fraction),
    "static_threshold": _share,
    "theta_grid": _each(_share),
    "cs_kind": _one_of(("cs1", "cs2", "pairwise")),
    "threshold_kind": _one_of(("static", "otsu")),
    "cas_method": _one_of(("static", "otsu")),
    # statistics
    "n_boot": _at_least(1, " (bootstrap resamples; 2000 is the book's default)"),
    # interventions and edits
    "enhance_factor": lambda v: None if v > 1 else "must be > 1 (enhance multiplies the activations)",
    "alphas": _each(_NOT_NEGATIVE, "every scaling factor"),
    "renormalize": _boolean,
    "mass_matched": _boolean,
    "beta1": _NOT_NEGATIVE,
    "beta2": _NOT_NEGATIVE,
    "beta2_grid": _each(_NOT_NEGATIVE),
    "lambda1": _NOT_NEGATIVE,
    "lambda2": _NOT_NEGATIVE,
    "lambda2_grid": _each(_NOT_NEGATIVE),
    "split": _one_of(("random", "last")),
    "n_heldout": _at_least(1),
    "n_unrelated": _NOT_NEGATIVE,
    "n_ppl_texts": _NOT_NEGATIVE,
    # passed by the runner
    "executor": _one_of(("local", "ray")),
    "profile": lambda v: None,
}


def rule_kw(*, rule: str, steps: int | None = None, tol: float | None = None) -> dict:
    """The attribution-rule arguments of a chapter's ``rule``, ``steps`` and ``tol``: ``steps`` with the fixed
    rules (``riemann``, ``gauss``), ``tol`` with ``adaptive`` (which places its own points: ``steps`` does not
    apply to it)."""
    if rule == "adaptive":
        return dict(rule="adaptive", steps=None, tol=tol)
    return dict(rule=rule, steps=steps, tol=None)


def check_value(name: str, value: Any, where: str) -> None:
    """Refuse a value out of its declared range (see :data:`VALUE_RULES`)."""
    rule = VALUE_RULES.get(name)
    if rule is None:  # a parameter of a chapter outside the book (the tests' own chapters)
        return
    try:
        problem = rule(value)
    except TypeError:
        problem = "has the wrong type"
    if problem:
        raise ParameterError(f"Parameter {name}={value!r} ({where}) {problem}.")


def _valid_list(declared: Mapping[str, Any]) -> str:
    return "\n".join(f"  {k} = {v!r}" for k, v in declared.items())


def parameters_for(
    chapter_path: str | Path, profile: str | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters to pass to ``chapter_path`` under ``profile`` (a name or a loaded profile) + ``overrides``.

    Raises :class:`ParameterError` for override names the chapter does not declare and for values whose
    type differs from the declared default; the message lists the valid parameters with their defaults.
    """
    chapter = Path(chapter_path)
    prof = load_profile(profile) if isinstance(profile, str) else dict(profile)
    declared = declared_parameters(chapter)
    if not declared:
        if overrides:
            raise ParameterError(f"{chapter.name} has no `parameters` cell, so it takes no parameters.")
        return {}
    if "profile" in (overrides or {}):
        raise ParameterError("`profile` is the profile's name: choose it with --profile, not as a parameter.")
    unknown = sorted(set(overrides or {}) - set(declared))
    if unknown:
        raise ParameterError(
            f"{chapter.name} has no parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}. "
            f"Valid parameters (with their defaults):\n{_valid_list(declared)}"
        )
    merged: dict[str, tuple[Any, str]] = {}
    for key, value in prof.items():
        if key not in RUNNER_KEYS and key != "name":
            merged[key] = (value, f"profile {prof['name']!r}")
    for prefix, table in (prof.get("chapters") or {}).items():
        if chapter.stem.startswith(str(prefix)):
            for key, value in table.items():
                merged[key] = (value, f"profile {prof['name']!r}, chapters.{prefix}")
    for key, value in (overrides or {}).items():
        merged[key] = (value, "command line")
    merged["profile"] = (prof["name"], "profile name")
    out: dict[str, Any] = {}
    try:
        for key, (value, where) in merged.items():
            if key in declared:
                out[key] = coerce(key, value, declared[key], where)
                check_value(key, out[key], where)
    except ParameterError as exc:
        raise ParameterError(f"{chapter.name}: {exc}\nValid parameters (with their defaults):\n"
                             f"{_valid_list(declared)}") from None
    check_together({**declared, **out}, chapter.name)
    return out


#: parameters that must agree with another: (subset, superset) -- every value of the first among the second's
#: (when the second is not empty, which means "all")
SUBSETS = (("site_relations", "relations"), ("site_methods", "methods"))


def check_together(params: Mapping[str, Any], where: str) -> None:
    """Refuse values that are valid alone but not together, e.g. ``site_relations`` outside ``relations`` (the
    site comparison takes its facts from the chapter's relations: it would silently compare nothing)."""
    for sub, sup in SUBSETS:
        if sub in params and sup in params and params[sup]:
            outside = [v for v in params[sub] if v not in params[sup]]
            if outside:
                raise ParameterError(f"{where}: {sub} {outside} not among {sup} {list(params[sup])}; choose {sub} "
                                     f"from {sup} (or [] for all of them)")
    if "edit_method" in params and "methods" in params and params["edit_method"] not in params["methods"]:
        raise ParameterError(f"{where}: edit_method {params['edit_method']!r} must be one of methods "
                             f"{list(params['methods'])}")
