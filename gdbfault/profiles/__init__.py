"""Probe profiles: which kernel symbol plays which role on the fault path.

A profile is a TOML data file (never code) listing roles and, for each, the
symbol names it may have in a kernel family; the first name the kernel has
wins. Profiles ship for the lab kernel, 2.x-era Linux and modern Linux; users
pass their own file with --profile FILE and add probes with --probe
ROLE=SYMBOL.
"""
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gdbfault.errors import GdbfaultError

__all__ = ["Probe", "Profile", "load_profile", "builtin_profiles", "pick_profile",
           "resolve_probes", "parse_probe_option"]

_DIR = Path(__file__).resolve().parent
# Roles the path classifier and the ground-truth checks know by these names.
ENTRY, SEARCH, SIGNAL, RESOLVED = "fault entry", "exception search", "signal forced", "fault resolved"
USER_FAULT = "user fault"


@dataclass(frozen=True)
class Probe:
    role: str
    symbol: str
    address: int


@dataclass
class Profile:
    name: str
    description: str
    detect: list
    roles: list          # [(role, [symbol names], optional)]
    source: Path


def _parse(path):
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GdbfaultError(f"profile file not found: {path}")
    except tomllib.TOMLDecodeError as exc:
        raise GdbfaultError(f"profile {path} is not valid TOML: {exc}")
    roles = []
    for i, entry in enumerate(data.get("probes", [])):
        if not isinstance(entry, dict) or "role" not in entry or "symbols" not in entry:
            raise GdbfaultError(f"profile {path}: probes[{i}] needs 'role' and 'symbols'")
        symbols = entry["symbols"]
        if isinstance(symbols, str):
            symbols = [symbols]
        roles.append((str(entry["role"]), [str(s) for s in symbols], bool(entry.get("optional", False))))
    if not roles:
        raise GdbfaultError(f"profile {path} defines no probes")
    return Profile(str(data.get("name", Path(path).stem)), str(data.get("description", "")),
                   [str(s) for s in data.get("detect", [])], roles, Path(path))


def builtin_profiles():
    """name -> Profile for every profile shipped with gdbfault."""
    return {p.name: p for p in (_parse(f) for f in sorted(_DIR.glob("*.toml")))}


# Old names that still load (linux-2.x was split into linux-2.0 and linux-2.2).
ALIASES = {"linux-2.x": "linux-2.2"}


def load_profile(name_or_path):
    builtin = builtin_profiles()
    name_or_path = ALIASES.get(name_or_path, name_or_path)
    if name_or_path in builtin:
        return builtin[name_or_path]
    if Path(name_or_path).suffix == ".toml" or Path(name_or_path).exists():
        return _parse(name_or_path)
    raise GdbfaultError(f"unknown profile '{name_or_path}'",
                        f"built-in profiles: {', '.join(builtin)}; or give a .toml file")


def pick_profile(symbols):
    """The most specific built-in profile whose detect symbols all exist."""
    fits = [p for p in builtin_profiles().values()
            if p.detect and all(symbols.address(s) is not None for s in p.detect)]
    if not fits:
        entries = [s for s in ("do_page_fault", "exc_page_fault", "do_user_addr_fault")
                   if symbols.address(s) is not None]
        raise GdbfaultError(f"no built-in profile fits the symbols in {symbols.source}"
                            + (f" (fault entries there: {', '.join(entries)})" if entries else ""),
                            "name probes with --probe ROLE=SYMBOL or a --profile FILE")
    return max(fits, key=lambda p: len(p.detect))


def parse_probe_option(text):
    """'ROLE=SYMBOL' (or just 'SYMBOL', role = symbol) -> (role, symbol)."""
    role, sep, symbol = text.partition("=")
    if not sep:
        role, symbol = text, text
    role, symbol = role.strip(), symbol.strip()
    if not role or not symbol:
        raise GdbfaultError(f"bad --probe '{text}'", "write it as ROLE=SYMBOL, e.g. 'signal forced=force_sig'")
    return role, symbol


def resolve_probes(profile, symbols, extra=()):
    """Probes (role, symbol, address) for a kernel; extra = [(role, symbol)] overrides."""
    probes = {}
    for role, names, optional in profile.roles:
        found = next((n for n in names if symbols.address(n) is not None), None)
        if found is None:
            if optional:
                continue
            symbols.require(names[0], suggest=_suggestions(role))
        probes[role] = Probe(role, found, symbols.address(found))
    for role, symbol in extra:
        probes[role] = Probe(role, symbol, symbols.require(symbol, suggest=_suggestions(role)))
    return list(probes.values())


def _suggestions(role):
    for profile in builtin_profiles().values():
        for r, names, _ in profile.roles:
            if r == role:
                yield from names
