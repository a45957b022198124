"""The oldest Python the scripts claim, for real: a Debian root (debootstrap) whose python3 is that version.

A student's server may run an old Python (Debian 11 has 3.9, Ubuntu 22.04 has 3.10), so the floor in the scripts'
PEP 723 header is proven, not assumed: the Debian release whose python3 is that floor is bootstrapped into a folder,
a virtualenv there gets the versions of pika, click and tenacity that the header's ranges resolve to on that Python
(downloaded on this host by pip, installed in the root without a network), and the tests run the real scripts in it
with chroot. The root shares this host's network, so 127.0.0.1 reaches the suite's broker.

The root is built once and cached under ~/.cache/labkit/roots (or $XDG_CACHE_HOME/labkit/roots, or
$LABKIT_CACHE/roots), keyed by the Debian release and RECIPE; each virtualenv in it is keyed by the dependency ranges
and the Python version. A lock file lets concurrent test sessions share it. Needs root (debootstrap, chroot) and the
debootstrap package; the Debian mirror is $LABKIT_DEBIAN_MIRROR, else the one this host's apt uses, else
deb.debian.org, else archive.debian.org (the first that serves the release).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

RECIPE = "1"  # bump when the way a root is built changes, so cached roots built the old way are not reused
# The Debian release whose python3 is each Python version (Ubuntu's archives are not reachable here, so 3.10 is not).
SUITES = {(3, 9): "bullseye", (3, 11): "bookworm", (3, 13): "trixie"}
PACKAGES = ("python3", "python3-venv")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY = ".labkit-root.json"


class Unavailable(Exception):
    """The old Python cannot be had on this machine; the message says why and what would fix it."""


@dataclass(frozen=True)
class Requirements:
    """What the scripts' PEP 723 headers claim: the oldest Python and the dependency ranges."""

    floor: tuple[int, int]
    dependencies: tuple[str, ...]


def pep_723(path: Path) -> dict:
    block = re.search(r"^# /// script\n((?:#.*\n)+?)^# ///$", path.read_text(encoding="utf-8"), re.M)
    if block is None:
        raise ValueError(f"{path.name} has no PEP 723 '# /// script' block")
    return tomllib.loads("".join(line[2:] + "\n" for line in block.group(1).splitlines()))


def parse_floor(spec: str, where: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", spec)
    if match is None:
        raise ValueError(f"{where}: requires-python {spec!r} is not of the form '>=X.Y'")
    return int(match.group(1)), int(match.group(2))


def script_requirements(scripts: Iterable[Path]) -> Requirements:
    """The floor (the same in every script, or an error) and the union of the scripts' dependency ranges."""
    floors, dependencies = {}, set()
    for path in scripts:
        metadata = pep_723(path)
        floors[path.name] = parse_floor(metadata["requires-python"], path.name)
        dependencies.update(metadata.get("dependencies", []))
    if len(set(floors.values())) != 1:
        raise ValueError(f"the scripts claim different Python floors: {floors}")
    return Requirements(next(iter(floors.values())), tuple(sorted(dependencies)))


@dataclass(frozen=True)
class OldPython:
    """A virtualenv with the scripts' dependencies in a Debian root; commands run in it with chroot."""

    root: Path
    suite: str
    version: str  # python3's full version in the root, e.g. 3.9.2
    python: str  # the virtualenv's interpreter, as a path inside the root
    packages: dict  # name -> version installed in the virtualenv

    def command(self, *args: str, cwd: str = "/") -> list[str]:
        """argv running the virtualenv's python with `args`, in folder `cwd` (a path inside the root)."""
        return ["chroot", str(self.root), "/usr/bin/env", "-C", cwd, self.python, *args]

    def inside(self, host_path: Path) -> str:
        """The path inside the root of a file or folder under it."""
        return "/" + str(host_path.resolve().relative_to(self.root.resolve()))


def cache_root() -> Path:
    if os.environ.get("LABKIT_CACHE"):
        return Path(os.environ["LABKIT_CACHE"]) / "roots"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labkit" / "roots"


def apt_mirrors() -> list[str]:
    """The Debian archive URIs this host's apt uses (deb822 .sources and one-line .list files)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    found = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found += re.findall(r"^\s*URIs:\s*(\S+)", text, re.M)
        found += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    return [uri.rstrip("/") for uri in found if re.search(r"/debian$", uri.rstrip("/"))]


def pick_mirror(suite: str) -> str:
    candidates = [os.environ["LABKIT_DEBIAN_MIRROR"]] if os.environ.get("LABKIT_DEBIAN_MIRROR") else [
        *apt_mirrors(), "http://deb.debian.org/debian", "http://archive.debian.org/debian"]
    tried = []
    for mirror in dict.fromkeys(candidates):
        try:
            with urllib.request.urlopen(f"{mirror}/dists/{suite}/Release", timeout=20) as response:
                if response.status == 200:
                    return mirror
                tried.append(f"{mirror}: HTTP {response.status}")
        except Exception as exc:  # any failure to fetch means: try the next mirror
            tried.append(f"{mirror}: {exc}")
    raise Unavailable(f"no Debian mirror serves {suite}: " + "; ".join(tried)
                      + " (set LABKIT_DEBIAN_MIRROR to one that does)")


def run(argv: list[str], what: str, timeout: float, env: Optional[dict] = None) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                env=env)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{what}: timed out after {timeout:.0f}s") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise Unavailable(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def chroot_env() -> dict:
    """A clean environment inside the root: nothing of this host's pip configuration or virtualenv leaks in."""
    return {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root", "PIP_CONFIG_FILE": "/dev/null"}


def unmount_under(folder: Path) -> None:
    """Undo mounts a killed debootstrap may have left (its /proc, /sys) before deleting its folder."""
    prefix = str(folder.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def remove(folder: Path) -> None:
    if folder.exists():
        unmount_under(folder)
        shutil.rmtree(folder)


def interpreter_version(root: Path, python: str = "/usr/bin/python3") -> str:
    code = "import sys; print('.'.join(map(str, sys.version_info[:3])))"
    return run(["chroot", str(root), python, "-c", code], f"running {python} in {root}", 60,
               env=chroot_env()).strip()


def build_root(cache: Path, suite: str, log: list[str]) -> tuple[Path, str]:
    """The cached Debian root for `suite`, built now if missing; returns it and its python3's version."""
    root = cache / f"debian-{suite}-r{RECIPE}"
    if (root / READY).exists():
        info = json.loads((root / READY).read_text())
        log.append(f"cached Debian {suite} root at {root} (python {info['python']}, built in {info['seconds']}s)")
        return root, info["python"]
    if not shutil.which("debootstrap"):
        raise Unavailable("debootstrap is not installed (apt-get install debootstrap; ./kit test should do it)")
    started = time.monotonic()
    mirror = pick_mirror(suite)
    for stale in cache.glob(f"debian-{suite}-r{RECIPE}.building*"):  # a build that was killed: we hold the lock
        remove(stale)
    building = cache / f"debian-{suite}-r{RECIPE}.building"
    run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(building), mirror],
        f"debootstrap {suite} from {mirror}", 1800)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):  # the .debs and indexes: a third of the size
        for path in (building / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    # Name resolution for "localhost" without the host's files; everything else goes by address.
    (building / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    version = interpreter_version(building)
    seconds = round(time.monotonic() - started)
    (building / READY).write_text(json.dumps({"suite": suite, "mirror": mirror, "python": version,
                                              "recipe": RECIPE, "seconds": seconds}))
    building.rename(root)
    log.append(f"built Debian {suite} root at {root} from {mirror} in {seconds}s (python {version})")
    return root, version


def build_venv(root: Path, version: str, dependencies: tuple[str, ...], log: list[str]) -> tuple[str, dict]:
    """A virtualenv in the root with what `dependencies` resolve to on `version`; returns its python and packages."""
    key = hashlib.sha256(json.dumps([RECIPE, version, sorted(dependencies)]).encode()).hexdigest()[:12]
    venv, wheels = f"/opt/labkit/venv-{key}", root / "opt" / "labkit" / f"wheels-{key}"
    ready = root / venv.lstrip("/") / ".labkit-venv.json"
    if ready.exists():
        packages = json.loads(ready.read_text())
        log.append(f"cached virtualenv {venv}: {packages}")
        return f"{venv}/bin/python", packages
    started = time.monotonic()
    remove(root / venv.lstrip("/"))
    remove(wheels)
    # Resolved here, by this host's pip, for the root's exact Python version: pip honours each release's
    # Requires-Python, so the ranges give what a student's pip would pick on that Python (click 8.1.x on 3.9).
    # Only pure-Python wheels are needed today; the root's own pip below would refuse a wheel for the wrong platform.
    run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         "--python-version", version, "--dest", str(wheels), *dependencies],
        f"pip download {' '.join(dependencies)} for Python {version}", 600)
    env = chroot_env()
    run(["chroot", str(root), "/usr/bin/python3", "-m", "venv", venv], f"python3 -m venv {venv} in {root}", 300, env)
    python = f"{venv}/bin/python"
    run(["chroot", str(root), python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-index", "--find-links", "/" + str(wheels.relative_to(root)), *dependencies],
        f"pip install {' '.join(dependencies)} in the root's Python {version}", 600, env)
    listed = run(["chroot", str(root), python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                 "pip list in the root", 120, env)
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in dependencies}
    packages = {p["name"].lower(): p["version"] for p in json.loads(listed) if p["name"].lower() in names}
    ready.write_text(json.dumps(packages))
    log.append(f"built virtualenv {venv} in {time.monotonic() - started:.0f}s: {packages}")
    return python, packages


def old_python(requirements: Requirements, log: Optional[list[str]] = None) -> OldPython:
    """The floor's Python with the scripts' dependencies, from the cache or built now; raises Unavailable."""
    log = [] if log is None else log
    suite = SUITES.get(requirements.floor)
    floor = "%d.%d" % requirements.floor
    if suite is None:
        raise Unavailable(f"the scripts claim Python >={floor}, and no Debian release here has Python {floor} "
                          f"(those that do: {', '.join('%d.%d %s' % (*v, s) for v, s in SUITES.items())})")
    if os.geteuid() != 0:
        raise Unavailable("building and entering the Debian root needs root (debootstrap, chroot)")
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building or using the same root
        root, version = build_root(cache, suite, log)
        if tuple(map(int, version.split(".")[:2])) != requirements.floor:
            raise Unavailable(f"Debian {suite}'s python3 is {version}, not the claimed floor {floor}")
        python, packages = build_venv(root, version, requirements.dependencies, log)
    return OldPython(root, suite, version, python, packages)
