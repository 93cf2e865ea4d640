"""Builds the Lambda assets on the host, so no Docker engine is needed: the dependencies
layer with pip, and every asset's bytecode with the runtime's Python where there is one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

# Lambda's Python runtime and architecture; wheels are picked for these, not for the host.
PYTHON_VERSION = "3.13"
PIP_PLATFORM = "manylinux2014_aarch64"


def pip_install_args(requirements: str, target: str) -> list[str]:
    """Arguments after `python -m pip` that install the layer's packages into `target`.

    --no-deps: requirements.txt pins every transitive dependency except those the
    runtime provides (boto3/botocore), which pip would otherwise pull in again.
    --no-compile: .pyc files built by the host interpreter are useless on 3.13; they are
    made afterwards with the runtime's Python (`compile_bytecode`).
    """
    return [
        "install",
        "--requirement",
        requirements,
        "--target",
        target,
        "--platform",
        PIP_PLATFORM,
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-deps",
        "--no-compile",
        "--disable-pip-version-check",
        "--quiet",
    ]


def compile_args(target: str) -> list[str]:
    """Arguments after `python -m` that compile `target`'s modules to bytecode, for the
    runtime's interpreter only. Lambda cannot write bytecode caches (its file system is
    read-only), so without them every cold start compiles every module from source.
    Unchecked hashes: the caches do not depend on file times, and an asset's files never
    change once built."""
    return ["compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", target]


@cache
def runtime_python() -> str | None:
    """This machine's interpreter of the runtime's Python version, if it has one that runs
    (a version manager's shim may be on the PATH without its version installed)."""
    found = shutil.which(f"python{PYTHON_VERSION}")
    if found is None:
        return None
    asked = [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    answer = subprocess.run(asked, capture_output=True, text=True, check=False)
    return found if answer.stdout.strip() == PYTHON_VERSION else None


@cache
def _say_source_only() -> None:
    """Once a synth: every asset is in the same case."""
    print(
        f"python{PYTHON_VERSION} not found: the Lambda assets ship without bytecode caches, "
        "and Lambda compiles their modules on every cold start",
        file=sys.stderr,
    )


def compile_bytecode(target: str) -> bool:
    """Bytecode caches for `target`, made with the runtime's Python if this machine has it
    (caches are per Python version). Returns whether they were made."""
    python = runtime_python()
    if python is None:
        _say_source_only()
        return False
    done = subprocess.run(
        [python, "-m", *compile_args(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"bytecode compilation failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
    return done.returncode == 0


@jsii.implements(ILocalBundling)
class LocalPipBundling:
    """Runs pip with the interpreter that runs the CDK app."""

    def __init__(self, source_dir: Path) -> None:
        self._requirements = source_dir / "requirements.txt"

    # The CDK passes the bundling options too; they are not needed here.
    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        target = str(Path(output_dir) / "python")
        command = [sys.executable, "-m", "pip", *pip_install_args(str(self._requirements), target)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            # Returning False hands over to the Docker image, so say why first.
            print(
                f"local pip bundling failed ({result.returncode}):\n{result.stdout}{result.stderr}",
                file=sys.stderr,
            )
            return False
        compile_bytecode(target)
        return True


# What never goes into an asset: the host's bytecode caches (of another Python) and
# editable-install metadata.
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/*.egg-info"]
_EXCLUDED_NAMES = shutil.ignore_patterns(*(p.removeprefix("**/") for p in ASSET_EXCLUDES))


@jsii.implements(ILocalBundling)
class LocalCopyBundling:
    """Copies a folder of our own code and compiles it with the runtime's Python."""

    def __init__(self, source_dir: Path) -> None:
        self._source_dir = source_dir

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        shutil.copytree(self._source_dir, output_dir, ignore=_EXCLUDED_NAMES, dirs_exist_ok=True)
        compile_bytecode(output_dir)
        return True


def source_code(source_dir: Path) -> lambda_.Code:
    """A folder of Clearline's own code (a function, or the library layer), as it is, with
    bytecode caches for the runtime where they can be made."""
    docker_command = " ".join(
        ["cp -r /asset-input/. /asset-output/ && python -m", *compile_args("/asset-output")]
    )
    return _bundled(source_dir, docker_command, LocalCopyBundling(source_dir), ASSET_EXCLUDES)


def dependencies_layer_code(source_dir: Path) -> lambda_.Code:
    """The dependencies layer: `python/` holding the wheels listed in requirements.txt."""
    docker_command = " ".join(
        [
            "pip",
            *pip_install_args("/asset-input/requirements.txt", "/asset-output/python"),
            "&&",
            "python",
            "-m",
            *compile_args("/asset-output/python"),
        ]
    )
    return _bundled(source_dir, docker_command, LocalPipBundling(source_dir))


def _bundled(
    source_dir: Path, docker_command: str, local: ILocalBundling, exclude: list[str] | None = None
) -> lambda_.Code:
    """An asset built on this machine by `local`, or else by `docker_command` in the
    runtime's build image."""
    return lambda_.Code.from_asset(
        str(source_dir),
        exclude=exclude,
        # The source (with the pinned requirements, for the dependencies) determines the
        # output: hashing the source keeps the asset hash stable between builds.
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            image=lambda_.Runtime.PYTHON_3_13.bundling_image,
            platform="linux/arm64",
            command=["bash", "-c", docker_command],
            local=local,
        ),
    )
