"""Node images built on this machine with no container registry.

A recipe is a directory `images/<name>/` with `recipe.yaml` and a `Dockerfile`. Building it:
a debootstrap root filesystem imported into Docker as the base (cached by its suite, mirror and
package list: recipes with the same ones share one base image, under a tag of each),
Python wheels fetched on the build host with `pip install --target` for the image's own Python
(its version, ABI and glibc, asked from the base image: a 3.12 host builds a 3.11 image right;
cached by the pins and that interpreter), then `docker build` adding those and the project's
`workloads/`. The image carries a label with the
hash of everything it was built from, so a stale image is detected and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed.errors import CapabilityError, InputError

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "images"
WORKLOADS = ROOT / "workloads"
CACHE = Path("/var/cache/testbed/images")
RECIPE_LABEL = "org.edge-testbed.recipe"
WORKLOAD_DIR = "/opt/testbed/workloads"  # where the image holds workloads/

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    suite: str
    mirror: str
    packages: tuple[str, ...]
    python: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"{self.name}:latest"

    @property
    def base_tag(self) -> str:
        key = f"{self.suite} {self.mirror} {' '.join(sorted(self.packages))}"
        return f"{self.name}-base:{_sha(key.encode())[:12]}"

    def digest(self) -> str:
        """Hash of the recipe files, the pinned wheels and the workload code the image holds."""
        h = hashlib.sha256()
        here = ROOT if self.path.is_relative_to(ROOT) else self.path.parent
        mine = [(f, f.relative_to(here)) for f in self.path.rglob("*")]
        code = [(f, f.relative_to(ROOT)) for f in [*WORKLOADS.rglob("*.py"),
                                                    *WORKLOADS.rglob("*.yaml")]]
        for f, rel in sorted(mine + code):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(rel).encode() + b"\0" + f.read_bytes())
        return h.hexdigest()[:16]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recipe_dirs() -> list[Path]:
    """Where recipes are found: images/ of this checkout, then every directory listed in
    TESTBED_RECIPES (colon-separated), so a user's recipes can live outside the repository;
    a name in an earlier directory wins."""
    extra = [Path(p).expanduser() for p in os.environ.get("TESTBED_RECIPES", "").split(":") if p]
    return [RECIPES, *extra]


def recipes() -> dict[str, Recipe]:
    out: dict[str, Recipe] = {}
    found = [d for root in recipe_dirs() if root.is_dir() for d in sorted(root.iterdir())]
    for d in found:
        if d.name in out:
            continue
        f = d / "recipe.yaml"
        if f.is_file():
            raw = yaml.safe_load(f.read_text()) or {}
            base = raw.get("base") or {}
            out[d.name] = Recipe(d.name, d, base.get("suite", "bookworm"),
                                 base.get("mirror", "http://deb.debian.org/debian"),
                                 tuple(base.get("packages", ())), tuple(raw.get("python", ())))
    return out


def recipe(name: str) -> Recipe:
    found = recipes()
    if name not in found:
        raise InputError(f"no image recipe {name!r} in {', '.join(map(str, recipe_dirs()))}; "
                         f"recipes: {', '.join(found) or 'none'} (add a directory of your own "
                         "with --recipes DIR or TESTBED_RECIPES)")
    return found[name]


def client():
    """A Docker engine client, or a CapabilityError saying how to get an engine."""
    import docker

    try:
        c = docker.from_env(timeout=120)
        c.ping()
        return c
    except Exception as e:  # docker raises several unrelated types when there is no engine
        raise CapabilityError(f"no Docker engine is reachable ({type(e).__name__}); run "
                              "`make setup` (it installs docker.io and starts dockerd)") from None


def image_state(name: str) -> str:
    """'ready', 'stale' (built from other recipe/workload files), 'missing' or 'foreign'
    (an image of that name not made from a recipe here: used as it is)."""
    import docker

    try:
        img = client().images.get(name if ":" in name else f"{name}:latest")
    except docker.errors.ImageNotFound:
        return "missing"
    built = (img.labels or {}).get(RECIPE_LABEL)
    plain = name.split(":")[0]
    if built is None or plain not in recipes():
        return "foreign"
    return "ready" if built == recipes()[plain].digest() else "stale"


def in_use() -> dict[str, list[str]]:
    """Images the containers of running testbeds use -> 'testbed/node' using each."""
    out: dict[str, list[str]] = {}
    try:
        docker = client()
    except CapabilityError:
        return out
    from testbed.naming import CONTAINER_LABEL

    for c in docker.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
        image = c.attrs["Config"]["Image"]
        node = c.labels.get("org.edge-testbed.node", c.name)
        out.setdefault(image, []).append(f"{c.labels[CONTAINER_LABEL]}/{node}")
    return out


def build(name: str = "edge-node", force: bool = False, progress: Progress = lambda s: None,
          ) -> str:
    """Build image `name` from its recipe unless an up-to-date one exists; returns its tag."""
    r = recipe(name)
    if not force and image_state(name) == "ready":
        progress(f"{r.tag} is up to date")
        return r.tag
    docker_client = client()
    previous = _image_id(docker_client, r.tag)
    _build_base(r, docker_client, progress)
    python = image_python(r.base_tag) if r.python else None
    site = _python_packages(r, python, progress)
    with tempfile.TemporaryDirectory(prefix="context-", dir=CACHE) as tmp:
        ctx = Path(tmp)
        shutil.copy(r.path / "Dockerfile", ctx / "Dockerfile")
        # hard links: the context holds ~1 GB of wheels, and the cache is on the same disk
        shutil.copytree(site, ctx / "site-packages", symlinks=True, copy_function=os.link)
        shutil.copytree(WORKLOADS, ctx / "workloads",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        progress(f"docker build {r.tag}")
        # --force-rm: a failed step leaves no intermediate container behind
        res = subprocess.run(
            ["docker", "build", "-q", "--force-rm", "--build-arg", f"BASE={r.base_tag}",
             "--build-arg", f"PYVER={python[0] if python else ''}",
             "--label", f"{RECIPE_LABEL}={r.digest()}", "-t", r.tag, str(ctx)],
            capture_output=True, text=True)
        if res.returncode != 0:
            raise CapabilityError(f"docker build of {r.tag} failed:\n{res.stderr[-2000:]}")
    _drop_replaced(docker_client, previous, r.tag)
    return r.tag


def _drop_replaced(docker_client, previous: str | None, tag: str) -> None:
    """Remove the image `tag` named before a rebuild (a GB each for edge-node) once nothing
    names or runs it; one a container still runs stays, and goes with a later rebuild's."""
    import docker

    if previous is None or previous == docker_client.images.get(tag).id:
        return
    with contextlib.suppress(docker.errors.APIError):
        if not docker_client.images.get(previous).tags:
            docker_client.images.remove(previous)


def _image_id(docker_client, tag: str) -> str | None:
    import docker

    try:
        return docker_client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return None


def _build_base(r: Recipe, docker_client, progress: Progress) -> None:
    import docker

    try:
        docker_client.images.get(r.base_tag)
        return
    except docker.errors.ImageNotFound:
        pass
    key = r.base_tag.rsplit(":", 1)[1]  # the same root filesystem another recipe already has
    twin = next((img for img in docker_client.images.list()
                 if any(t.endswith(f"-base:{key}") for t in img.tags)), None)
    if twin is not None:
        progress(f"{r.base_tag}: the same base as {twin.tags[0]}")
        twin.tag(*r.base_tag.rsplit(":", 1))
        return
    if shutil.which("debootstrap") is None:
        raise CapabilityError("debootstrap is not installed; run `make setup`")
    with tempfile.TemporaryDirectory(prefix="testbed-rootfs-") as tmp:
        progress(f"debootstrap {r.suite} ({len(r.packages)} packages; about a minute)")
        res = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(r.packages)}",
             r.suite, tmp, r.mirror], capture_output=True, text=True)
        if res.returncode != 0:
            raise CapabilityError(f"debootstrap failed (is {r.mirror} reachable?):\n"
                                  f"{res.stdout[-1500:]}{res.stderr[-500:]}")
        shutil.rmtree(Path(tmp) / "var/cache/apt/archives", ignore_errors=True)
        progress(f"docker import {r.base_tag}")
        tar = subprocess.Popen(["tar", "-C", tmp, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-c", 'CMD ["sleep", "infinity"]', "-",
                              r.base_tag], stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise CapabilityError(f"docker import failed: {imp.stderr[-1000:]}")


CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def torch_cpu_index() -> list[str]:
    """PyPI's Linux torch is the CUDA build (GBs of nvidia packages); PyTorch's own CPU index
    has `2.13.0+cpu`, which pip prefers for `torch==2.13.0`. Added where that index answers
    (setup.sh does the same for the virtualenv)."""
    import urllib.request

    try:
        urllib.request.urlopen(CPU_TORCH_INDEX + "/torch/", timeout=5).close()
    except OSError:
        return []
    return ["--extra-index-url", CPU_TORCH_INDEX]


def image_python(base_tag: str) -> tuple[str, str, str]:
    """(version "3.11", glibc "2.36", machine "x86_64") of the python3 in an image."""
    res = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", base_tag, "python3", "-c",
         "import platform, sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}', "
         "platform.libc_ver()[1] or '2.17', platform.machine())"],
        capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise CapabilityError(f"the image {base_tag} has no working python3 for the recipe's "
                              f"python: packages ({res.stderr.strip()[-300:]}); add python3 to "
                              "base: packages")
    version, glibc, machine = res.stdout.split()
    return version, glibc, machine


def pip_target_options(version: str, glibc: str, machine: str) -> list[str]:
    """pip options that pick wheels for that interpreter instead of this host's: its CPython
    version and ABI, and every manylinux tag its glibc can load."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    platforms = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    platforms += [f"manylinux2014_{machine}", f"manylinux2010_{machine}",
                  f"manylinux1_{machine}", f"linux_{machine}"]
    abi = "cp" + version.replace(".", "")
    return ["--python-version", version, "--implementation", "cp", "--abi", abi,
            *(x for p in platforms for x in ("--platform", p))]


def _python_packages(r: Recipe, python: tuple[str, str, str] | None,
                     progress: Progress) -> Path:
    """The recipe's wheels installed into a directory on this host for the image's Python,
    cached by their pins and that interpreter."""
    key = " ".join([*sorted(r.python), *(python or ())])
    target = CACHE / f"{r.name}-site-{_sha(key.encode())[:12]}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if r.python:
        progress(f"pip install --target for Python {python[0]} ({', '.join(r.python)})")
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:",
                              "--no-compile", "--target", str(target),
                              *pip_target_options(*python), *torch_cpu_index(), *r.python],
                             capture_output=True, text=True)
        if res.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise CapabilityError(f"pip could not fetch {', '.join(r.python)}:\n"
                                  f"{res.stderr[-1500:]}")
    (target / ".complete").touch()
    return target
