"""A real, public Flyway migration set for PostgreSQL, written by a real project: the 69 SQL
migrations of Cloud Foundry UAA (the User Account and Authentication server), as shipped in its
jar `org.cloudfoundry.identity:cloudfoundry-identity-server:4.10.0` on Maven Central under
`org/cloudfoundry/identity/uaa/db/postgresql/` (V1_5_2__initial_db.sql ... V4_9_1__...sql).

Maven resolves the jar (no other host is reached) and only the `V*.sql` files are extracted: UAA's
six Java migrations in that folder are left out, and the SQL ones still migrate an empty database
from V1_5_2 to V4_9_1 with no edits and no placeholders. The result is laid out as one database
folder, `<root>/uaa/V*.sql`, the layout the project's migration sets use.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

UAA_ARTIFACT = "org.cloudfoundry.identity:cloudfoundry-identity-server:4.10.0"
UAA_JAR_NAME = "cloudfoundry-identity-server-4.10.0.jar"
UAA_POSTGRES_MIGRATIONS_IN_JAR = "org/cloudfoundry/identity/uaa/db/postgresql/"
UAA_DATABASE_NAME = "uaa"
UAA_MIGRATION_COUNT = 69
MAVEN_TIMEOUT_SECONDS = 600


def real_world_set(cache_dir: Path) -> Path:
    """The root of UAA's migration set (`<root>/uaa/V*.sql`), fetched and extracted once under
    `cache_dir / "real-world-sets"`; later calls return the extracted folder without Maven."""
    sets_dir = cache_dir / "real-world-sets"
    root = sets_dir / "cloudfoundry-uaa-4.10.0"
    if (root / UAA_DATABASE_NAME).is_dir():
        return root
    jar = _resolve_with_maven(UAA_ARTIFACT, UAA_JAR_NAME, sets_dir / "jars")
    sets_dir.mkdir(parents=True, exist_ok=True)
    # Extract beside the final folder and rename it into place, so that an interrupted run never
    # leaves a half-filled folder that a later call would take as cached.
    staging_root = Path(tempfile.mkdtemp(prefix=".uaa-", dir=sets_dir))
    try:
        database_dir = staging_root / UAA_DATABASE_NAME
        _extract_versioned_sql(jar, UAA_POSTGRES_MIGRATIONS_IN_JAR, database_dir)
        staging_root.rename(root)
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        if (root / UAA_DATABASE_NAME).is_dir():
            return root  # another process renamed its copy into place first
        raise
    return root


def _resolve_with_maven(artifact: str, jar_name: str, jars_dir: Path) -> Path:
    """`artifact` copied by Maven (`dependency:copy`) into `jars_dir`, or the copy already there."""
    jar = jars_dir / jar_name
    if jar.is_file():
        return jar
    jars_dir.mkdir(parents=True, exist_ok=True)
    command = [
        "mvn",
        "-q",
        "-B",
        "dependency:copy",
        f"-Dartifact={artifact}",
        f"-DoutputDirectory={jars_dir}",
    ]
    # Run from the jars folder: Maven must not pick up a project's pom.xml as its project.
    try:
        done = subprocess.run(
            command,
            cwd=jars_dir,
            capture_output=True,
            text=True,
            timeout=MAVEN_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(
            f"Maven could not resolve {artifact}: `{' '.join(command)}` did not run: {error}"
        ) from error
    if done.returncode != 0 or not jar.is_file():
        output = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(
            f"Maven could not resolve {artifact}: `{' '.join(command)}` exited "
            f"{done.returncode} without {jar}:\n{output}"
        )
    return jar


def _extract_versioned_sql(jar: Path, folder_in_jar: str, database_dir: Path) -> None:
    """The `V*.sql` files directly inside `folder_in_jar` of `jar`, written flat into
    `database_dir`."""
    database_dir.mkdir(parents=True)
    extracted = 0
    with zipfile.ZipFile(jar) as archive:
        for entry in archive.infolist():
            if entry.is_dir() or not entry.filename.startswith(folder_in_jar):
                continue
            file_name = entry.filename[len(folder_in_jar) :]
            if "/" in file_name or not (file_name.startswith("V") and file_name.endswith(".sql")):
                continue
            (database_dir / file_name).write_bytes(archive.read(entry))
            extracted += 1
    if extracted != UAA_MIGRATION_COUNT:
        raise RuntimeError(
            f"{jar} holds {extracted} V*.sql files under {folder_in_jar}, "
            f"not the {UAA_MIGRATION_COUNT} expected of {UAA_ARTIFACT}"
        )
