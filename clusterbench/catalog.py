"""Finding a profile from what the user typed after --cluster: a name, a path, or `local`.

Names are looked up in a search path of profile folders, the user's first: --profiles-dir, then
$CLUSTERBENCH_PROFILES, then ./clusters, then the profiles shipped with clusterbench (package
data clusterbench.profiles), so `extends = "h200-node"` works from any directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from clusterbench.errors import ProfileError, nearest
from clusterbench.profile import Profile
from clusterbench.profile_loader import load_profile_file

LOCAL = "local"  # the built-in profile, derived from the machine the run is on
PROFILES_ENV = "CLUSTERBENCH_PROFILES"

ProfileFolders = Path | Sequence[Path]


def packaged_profiles_dir() -> Path:
    import clusterbench.profiles

    return Path(clusterbench.profiles.__file__).parent


def profile_search_path(profiles_dir: str | None, *, invocation_dir: Path, rootdir: Path | None = None) -> list[Path]:
    """The profile folders in the order they are searched; each folder once."""
    candidates = [Path(profiles_dir)] if profiles_dir else []
    if os.environ.get(PROFILES_ENV):
        candidates.append(Path(os.environ[PROFILES_ENV]))
    candidates.append(invocation_dir / "clusters")
    if rootdir is not None:
        candidates.append(rootdir / "clusters")
    candidates.append(packaged_profiles_dir())
    folders: list[Path] = []
    for folder in candidates:
        if folder.resolve() not in {f.resolve() for f in folders}:
            folders.append(folder)
    return folders


def _folders(profiles_dirs: ProfileFolders) -> list[Path]:
    return [profiles_dirs] if isinstance(profiles_dirs, Path) else list(profiles_dirs)


def available_profiles(profiles_dirs: ProfileFolders) -> list[str]:
    """`local` and every profile name the search path offers (a name found twice counts once: the first wins)."""
    names: list[str] = []
    for folder in _folders(profiles_dirs):
        if folder.is_dir():
            names += [p.stem for p in sorted(folder.glob("*.toml")) if p.stem not in names]
    return [LOCAL, *sorted(names)]


def find_profile(name: str, profiles_dirs: ProfileFolders) -> Path | None:
    """The first folder's `name.toml`, or None."""
    for folder in _folders(profiles_dirs):
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def _describe(profiles_dirs: ProfileFolders) -> str:
    folders = _folders(profiles_dirs)
    return f"profiles folder{'s' if len(folders) > 1 else ''} {', '.join(str(f) for f in folders)}"


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".toml") or "/" in spec or "\\" in spec


def _unknown_name(name: str, profiles_dirs: ProfileFolders) -> ProfileError:
    names = available_profiles(profiles_dirs)
    return ProfileError(
        f"unknown cluster '{name}'{nearest(name, names)}; available: {', '.join(names)} "
        f"({_describe(profiles_dirs)}; or give a path to a .toml file)"
    )


def _extends_resolver(profiles_dirs: ProfileFolders):
    def resolve(parent: str, from_file: Path) -> Path:
        if _looks_like_path(parent):
            return (from_file.parent / parent).resolve()
        found = find_profile(parent, [from_file.parent, *_folders(profiles_dirs)])
        if found is not None:
            return found
        names = available_profiles(profiles_dirs)[1:]
        raise ProfileError(
            f"{from_file}: [cluster]: extends '{parent}': no such profile{nearest(parent, names)}"
            f" (known: {', '.join(names) or 'none'} in {_describe(profiles_dirs)})"
        )

    return resolve


def resolve_cluster(spec: str, profiles_dirs: ProfileFolders) -> Profile:
    """The profile that `--cluster spec` names; `profiles_dirs` is one folder or the search path."""
    if spec == LOCAL:
        from clusterbench.local_profile import build_local_profile

        return build_local_profile()
    if _looks_like_path(spec):
        return load_profile_file(Path(spec), _extends_resolver(profiles_dirs))
    candidate = find_profile(spec, profiles_dirs)
    if candidate is None:
        raise _unknown_name(spec, profiles_dirs)
    return load_profile_file(candidate, _extends_resolver(profiles_dirs))
