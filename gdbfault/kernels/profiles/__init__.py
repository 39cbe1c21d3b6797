"""Probe profiles: which kernel symbol plays which role on the fault path.

A profile is a TOML data file (never code) listing roles and, for each, the
ordered symbol names it may have in a kernel family; the first name the
kernel has wins. Profiles ship for the lab kernel and for every era of i386
Linux (2.0, 2.1-2.2, 2.4, 2.6-4.x, 5.x-6.x); users pass their own file with
--profile FILE and add probes with --probe ROLE=SYMBOL.

`pick_profile()` chooses by the kernel image's release (the version string
in its setup header) when there is one and the era's required roles exist
in the map, else by which symbols exist; it says why in `ProbeProfile.reason`.
A role a profile marks optional and the kernel lacks is left out, with the
profile's note saying why (`ProbeProfile.notes`: 2.0 has no exception table).
"""
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.userfiles import read_input_text

__all__ = ["ResolvedProbe", "ProbeProfile", "load_profile", "builtin_profiles", "pick_profile",
           "choose_profile", "resolve_probes", "role_alternatives"]

_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ResolvedProbe:
    """A role resolved on one kernel: the symbol that plays it there, and its address."""
    role: str
    symbol: str
    address: int


@dataclass
class ProbeProfile:
    name: str
    description: str
    detect: list
    roles: list          # [(role, [symbol names], optional)]
    source: Path
    detect_absent: list = field(default_factory=list)   # symbols the family never has
    releases: str = ""   # regex on the image's release ("2.4.37") naming the era
    era: str = ""
    absent_notes: dict = field(default_factory=dict)    # role -> why a kernel may lack it
    reason: str = ""     # why pick_profile chose it (set there)
    notes: list = field(default_factory=list)           # set by resolve_probes


def _parse(path):
    try:
        data = tomllib.loads(read_input_text(path, "profile", "profile file"))
    except tomllib.TOMLDecodeError as exc:
        raise GdbfaultError(f"profile {path} is not valid TOML: {exc}")
    roles, absent_notes = [], {}
    for i, entry in enumerate(data.get("probes", [])):
        if not isinstance(entry, dict) or "role" not in entry or "symbols" not in entry:
            raise GdbfaultError(f"profile {path}: probes[{i}] needs 'role' and 'symbols'")
        symbols = entry["symbols"]
        if isinstance(symbols, str):
            symbols = [symbols]
        roles.append((str(entry["role"]), [str(s) for s in symbols], bool(entry.get("optional", False))))
        if "absent" in entry:
            absent_notes[str(entry["role"])] = str(entry["absent"])
    if not roles:
        raise GdbfaultError(f"profile {path} defines no probes")
    releases = str(data.get("releases", ""))
    try:
        re.compile(releases)
    except re.error as exc:
        raise GdbfaultError(f"profile {path}: 'releases' is not a valid pattern: {exc}")
    return ProbeProfile(str(data.get("name", Path(path).stem)), str(data.get("description", "")),
                   [str(s) for s in data.get("detect", [])], roles, Path(path),
                   detect_absent=[str(s) for s in data.get("detect_absent", [])],
                   releases=releases, era=str(data.get("era", "")), absent_notes=absent_notes)


def builtin_profiles():
    """name -> ProbeProfile for every profile shipped with gdbfault."""
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


def _fits_symbols(profile, symbols):
    return bool(profile.detect) and all(symbols.address(s) is not None for s in profile.detect) \
        and not any(symbols.address(s) is not None for s in profile.detect_absent)


def _required_missing(profile, symbols):
    """Roles the profile requires for which the map has none of the candidates."""
    return [names[0] for _, names, optional in profile.roles
            if not optional and not any(symbols.address(n) is not None for n in names)]


def pick_profile(symbols, release=None):
    """The built-in profile for a kernel; `.reason` says why it was chosen.

    The lab kernel is known by its own symbols. Otherwise the image's
    release (e.g. '2.4.37', from its setup header) names the era, provided
    that era's required roles exist in the map; failing that, the most
    specific profile whose detect symbols exist (and whose detect_absent
    symbols do not) wins.
    """
    profiles = builtin_profiles()
    lab = profiles.get("lab")
    if lab is not None and _fits_symbols(lab, symbols):
        lab.reason = "the map has the lab kernel's own symbols (lab_trigger_oops)"
        return lab
    era, why_not = None, ""
    if release:
        era = next((p for p in profiles.values() if p.releases and re.match(p.releases, release)), None)
        if era is not None:
            missing = _required_missing(era, symbols)
            if not missing:
                era.reason = f"release {release} is of the {era.era} era"
                return era
            why_not = (f"release {release} is of the {era.era} era, but the map lacks "
                       f"{', '.join(missing)}; ")
    fits = [p for p in profiles.values() if p is not lab and _fits_symbols(p, symbols)]
    if not fits:
        entries = [s for s in ("do_page_fault", "exc_page_fault", "do_user_addr_fault")
                   if symbols.address(s) is not None]
        raise GdbfaultError(f"no built-in profile fits the symbols in {symbols.source}"
                            + (f" ({why_not.rstrip('; ')})" if why_not else "")
                            + (f" (fault entries there: {', '.join(entries)})" if entries else ""),
                            "name probes with --probe ROLE=SYMBOL or a --profile FILE")
    best = max(fits, key=lambda p: len(p.detect) + len(p.detect_absent))
    best.reason = (why_not + f"the map has {', '.join(best.detect)}"
                   + (f" and no {', '.join(best.detect_absent)}" if best.detect_absent else ""))
    return best


def choose_profile(name, symbols, release=None):
    """The probe profile a run uses: `name` (--profile NAME|FILE) when given, else the one
    pick_profile chooses for these symbols and the image's release; `.reason` says why."""
    if not name:
        return pick_profile(symbols, release)
    profile = load_profile(name)
    profile.reason = "chosen with --profile"
    return profile


def resolve_probes(profile, symbols, extra=()):
    """Probes (role, symbol, address) for a kernel; extra = [(role, symbol)] overrides."""
    probes = {}
    profile.notes = []
    for role, names, optional in profile.roles:
        found = next((n for n in names if symbols.address(n) is not None), None)
        if found is None:
            if optional:
                if role in profile.absent_notes:
                    profile.notes.append(f"no {role} probe: {profile.absent_notes[role]}")
                continue
            symbols.require(names[0], suggest=_suggestions(role))
        probes[role] = ResolvedProbe(role, found, symbols.address(found))
    for role, symbol in extra:
        probes[role] = ResolvedProbe(role, symbol, symbols.require(symbol, suggest=_suggestions(role)))
    return list(probes.values())


def role_alternatives(role, symbols, chosen):
    """Other symbols of `role` (any built-in profile's candidates) that this map has."""
    seen, out = {chosen}, []
    for name in _suggestions(role):
        if name not in seen and symbols.address(name) is not None:
            out.append(name)
        seen.add(name)
    return out


def _suggestions(role):
    for profile in builtin_profiles().values():
        for r, names, _ in profile.roles:
            if r == role:
                yield from names
