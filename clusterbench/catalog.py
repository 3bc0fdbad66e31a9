"""Finding a profile from what the user typed after --cluster: a name, a path, or `local`."""

from __future__ import annotations

from pathlib import Path

from clusterbench.errors import ProfileError, nearest
from clusterbench.profile import Profile, load_profile_file

LOCAL = "local"  # the built-in profile, derived from the machine the run is on


def available_profiles(profiles_dir: Path) -> list[str]:
    names = sorted(p.stem for p in profiles_dir.glob("*.toml")) if profiles_dir.is_dir() else []
    return [LOCAL, *names]


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".toml") or "/" in spec or "\\" in spec


def _unknown_name(name: str, profiles_dir: Path) -> ProfileError:
    names = available_profiles(profiles_dir)
    return ProfileError(
        f"unknown cluster '{name}'{nearest(name, names)}; available: {', '.join(names)} "
        f"(profiles folder {profiles_dir}; or give a path to a .toml file)"
    )


def _extends_resolver(profiles_dir: Path):
    def resolve(parent: str, from_file: Path) -> Path:
        if _looks_like_path(parent):
            return (from_file.parent / parent).resolve()
        for folder in (from_file.parent, profiles_dir):
            candidate = folder / f"{parent}.toml"
            if candidate.is_file():
                return candidate
        names = available_profiles(profiles_dir)[1:]
        raise ProfileError(
            f"{from_file}: [cluster]: extends '{parent}': no such profile{nearest(parent, names)}"
            f" (known: {', '.join(names) or 'none'} in {profiles_dir})"
        )

    return resolve


def resolve_cluster(spec: str, profiles_dir: Path) -> Profile:
    """The profile that `--cluster spec` names."""
    if spec == LOCAL:
        from clusterbench.local_profile import build_local_profile

        return build_local_profile()
    if _looks_like_path(spec):
        return load_profile_file(Path(spec), _extends_resolver(profiles_dir))
    candidate = profiles_dir / f"{spec}.toml"
    if not candidate.is_file():
        raise _unknown_name(spec, profiles_dir)
    return load_profile_file(candidate, _extends_resolver(profiles_dir))
