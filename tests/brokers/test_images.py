"""images/build as ./kit runs it: a rebuild leaves none of the kit's images dangling, and no one else's is touched.

A real build, with tags of the test's own (RABBITMQ_IMAGE and the others) so that the kit's labkit/* images and the
containers of other tests are left alone; the debootstrap root images/build keeps is reused, so it takes seconds
once the kit's images exist (the first images/build below makes them if they do not)."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from labs.brokers.container import docker_available
from tests.helpers import ROOT, require

# In the 4.3 suite, for which ./kit test makes the kit's images: the 3.10 suite has no use for them, and would make
# them (a debootstrap of Debian sid) for this test alone.
pytestmark = [pytest.mark.slow(seconds=60),
              pytest.mark.skipif("config.getoption('--rabbitmq') != '4.3'",
                                 reason="the kit's images are the 4.3 suite's: images/build is tested there")]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300, check=check)


def image_id(name: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip()


def exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


def test_a_rebuild_removes_the_kits_dangling_images_and_no_one_elses(tmp_path: Path):
    require(docker_available(), "images/build needs Docker: start dockerd (./kit test does)")
    made = subprocess.run([str(ROOT / "images" / "build")], capture_output=True, text=True, timeout=1800)
    require(made.returncode == 0, f"images/build could not make the kit's images: {made.stderr.strip()[-500:]}")

    prefix = f"labkit-test-{secrets.token_hex(4)}"
    tags = {name: f"{prefix}/{name}:latest" for name in ("rabbitmq", "worker", "redis", "jobs")}
    env = {**os.environ, "RABBITMQ_IMAGE": tags["rabbitmq"], "WORKER_IMAGE": tags["worker"],
           "REDIS_IMAGE": tags["redis"], "JOBS_IMAGE": tags["jobs"], "LABKIT_CACHE": str(tmp_path / "cache")}
    # Someone else's image left dangling, as another project's rebuild leaves it: a FROM scratch image (no registry)
    # built twice under one tag. It must outlive the kit's clean-up.
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM scratch\nCOPY content /content\n")
    others_old = replaced = ""
    copy = tmp_path / "images"  # images/build works where it lies: a copy whose Dockerfile a test may change
    shutil.copytree(ROOT / "images", copy)
    dockerfile = copy / "worker" / "Dockerfile"
    # A worker image of the test's own from the first build on: built from the kit's folder as it is, it would be
    # the kit's labkit/worker image itself (the same layers and labels, so the same id) under a second tag.
    dockerfile.write_text(dockerfile.read_text() + f"# {prefix}\n")
    try:
        for content in ("first", "second"):
            (other / "content").write_text(content)
            docker("build", "-q", "-t", f"{prefix}/other:latest", str(other))
            others_old = others_old or image_id(f"{prefix}/other:latest")
        assert not docker("image", "inspect", "-f", "{{.RepoTags}}", others_old).stdout.strip("[]\n")  # dangling

        first = subprocess.run([str(copy / "build")], env=env, capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stderr
        replaced = image_id(tags["worker"])
        # The worker's folder changes: its image is built again under the same tag, the old one left without a tag.
        dockerfile.write_text(dockerfile.read_text() + "# changed\n")
        again = subprocess.run([str(copy / "build")], env=env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stderr
        assert image_id(tags["worker"]) != replaced, "not rebuilt"
        assert not exists(replaced), "the kit's replaced image is still there, dangling"
        assert exists(others_old), "the clean-up removed a dangling image that is not the kit's"
    finally:
        docker("image", "rm", "-f", *tags.values(), f"{prefix}/other:latest", check=False)
        for left in (others_old, replaced):  # by id: what a failed check above leaves behind
            if left:
                docker("image", "rm", "-f", left, check=False)
