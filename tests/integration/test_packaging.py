"""Packaging: the generated example configuration and key reference match the binary, docker/build.sh
(the script the Dockerfile's build stage runs) installs a working tree, the systemd unit verifies,
and the Dockerfile's runtime stage installs every shared library the binary needs.

The Docker engine does not run here, so the Dockerfile is checked by reading it and by running its
build script; TB_BUILD_DIR (set by ctest) lets that script reuse the already-built tree."""

import os
import re
import shlex
import shutil
import subprocess
import tempfile

import pytest

from harness import binary, sanitized

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("TB_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BUILD = os.environ.get("TB_BUILD_DIR", os.path.join(SOURCE, "build"))
DOCKERFILE = os.path.join(SOURCE, "docker", "Dockerfile")
BEGIN = "<!-- BEGIN KEY REFERENCE (scripts/gen-docs.sh) -->"
END = "<!-- END KEY REFERENCE -->"


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def printed(kind):
    r = run([binary(), f"--print-keys={kind}"], check=True)
    return r.stdout


def read(path):
    with open(os.path.join(SOURCE, path)) as f:
        return f.read()


# --- generated files -------------------------------------------------------------------------

def test_committed_example_config_is_what_the_binary_prints():
    assert read("config/tokenbouncer.conf") == printed("conf"), \
        "config/tokenbouncer.conf is out of date: run scripts/gen-docs.sh"


def test_committed_key_reference_is_what_the_binary_prints():
    doc = read("docs/configuration.md")
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1, "docs/configuration.md lost its markers"
    generated = doc.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated == "\n\n" + printed("markdown"), \
        "the key reference in docs/configuration.md is out of date: run scripts/gen-docs.sh"


def test_print_keys_is_rejected_with_an_unknown_format():
    r = run([binary(), "--print-keys=yaml"])
    assert r.returncode == 2
    assert "unknown option" in r.stderr


# --- the Dockerfile ----------------------------------------------------------------------------

def dockerfile_instructions():
    """(stage index, instruction, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", read("docker/Dockerfile"))
    stage = -1
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stage += 1
        out.append((stage, instr, args.strip()))
    return out


def runtime_packages():
    pkgs = set()
    last = max(s for s, _, _ in dockerfile_instructions())
    for stage, instr, args in dockerfile_instructions():
        if stage != last or instr != "RUN":
            continue
        for cmd in re.split(r"&&|;", args):
            words = shlex.split(cmd)
            if words[:2] == ["apt-get", "install"]:
                pkgs.update(w for w in words[2:] if not w.startswith("-"))
    return pkgs


def test_dockerfile_stages_and_build_script():
    ins = dockerfile_instructions()
    froms = [a for _, i, a in ins if i == "FROM"]
    assert froms[0].split() == ["debian:bookworm", "AS", "build"]
    assert froms[-1] == "debian:bookworm-slim"
    runs = [a for _, i, a in ins if i == "RUN" and "build.sh" in a]
    assert runs, "the build stage does not run docker/build.sh"
    for a in runs:
        words = shlex.split(a)
        assert words[0] == "docker/build.sh", a
        assert "--destdir" in words and "--prefix" in words, a
        assert words[words.index("--prefix") + 1] == "/usr", a
    # Nothing else in the build stage compiles on its own.
    assert not any(i == "RUN" and re.search(r"\bcmake\b|\bninja\b|\bg\+\+", a) for s, i, a in ins if s == 0)


def test_dockerfile_copies_what_its_build_configuration_installs(tmp_path):
    """The build stage's own configuration (docker/build.sh with the Dockerfile's arguments, in a
    fresh tree: prefix /usr, no tests) installs every path the runtime stage copies from it."""
    ins = dockerfile_instructions()
    build_args = next(shlex.split(a) for s, i, a in ins if s == 0 and i == "RUN" and "build.sh" in a)
    destdir = build_args[build_args.index("--destdir") + 1]
    prefix = build_args[build_args.index("--prefix") + 1]
    tree = str(tmp_path / "build")
    r = run([os.path.join(SOURCE, "docker", "build.sh"), "--configure-only", "--prefix", prefix,
             "--build-dir", tree], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(tree, "cmake_install.cmake")) as f:
        rules = f.read().replace("${CMAKE_INSTALL_PREFIX}", prefix)
    installed = set()
    for dest, files in re.findall(r'file\(INSTALL DESTINATION "([^"]+)" TYPE \w+ FILES((?:\s+"[^"]+")+)', rules):
        for path in re.findall(r'"([^"]+)"', files):
            installed.add(dest + "/" + os.path.basename(path))
            installed.add(dest)
    copies = [a.split() for s, i, a in ins if i == "COPY" and a.startswith("--from=build")]
    assert copies, "the runtime stage copies nothing from the build stage"
    for words in copies:
        source = words[1]
        assert source.startswith(destdir + "/"), words
        assert source[len(destdir):] in installed, f"{source} is not installed by the build stage: {sorted(installed)}"


def test_dockerfile_runtime_settings():
    ins = [(i, a) for s, i, a in dockerfile_instructions() if s == max(x for x, _, _ in dockerfile_instructions())]
    user = [a for i, a in ins if i == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    exposed = {p for i, a in ins if i == "EXPOSE" for p in a.split()}
    assert exposed == {"6432", "6433", "9127"}
    health = [a for i, a in ins if i == "HEALTHCHECK"]
    assert health and "/livez" in health[0] and "curl" not in health[0]
    env = " ".join(a for i, a in ins if i == "ENV")
    assert "TOKENBOUNCER_LISTEN_ADDR=127.0.0.1" in env
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    assert entry == ['["/usr/bin/tokenbouncer"]']
    # No CMD with a config file: the image is configured by TOKENBOUNCER_* variables only.
    assert not [a for i, a in ins if i == "CMD"]


def test_image_environment_alone_is_a_valid_configuration():
    # What the image's ENV gives, plus the two values a user must add.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBOUNCER_")}
    for _, i, a in dockerfile_instructions():
        if i == "ENV":
            for word in shlex.split(a):
                k, _, v = word.partition("=")
                env[k] = v
    env.update(TOKENBOUNCER_PG_HOST="your-server.postgres.database.azure.com",
               TOKENBOUNCER_PG_USER="my-managed-identity", TOKENBOUNCER_PG_AZURE_AUTH="on")
    r = run([binary(), "--check"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration OK" in r.stdout


# --- docker/build.sh and the installed tree ----------------------------------------------------

def cache_value(name):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(rf"^{name}:[A-Z]+=(.*)$", line.rstrip("\n"))
            if m:
                return m.group(1)
    return None


@pytest.fixture(scope="module")
def staged():
    """docker/build.sh into a temporary DESTDIR, reusing the build tree; the paths it installed."""
    if not os.path.exists(os.path.join(BUILD, "CMakeCache.txt")):
        pytest.skip(f"no configured build tree at {BUILD} (set TB_BUILD_DIR)")
    dest = tempfile.mkdtemp(prefix="tb-stage-")
    r = run([os.path.join(SOURCE, "docker", "build.sh"), "--destdir", dest, "--build-dir", BUILD, "--jobs", "2"],
            timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = cache_value("CMAKE_INSTALL_PREFIX")
    sysconf = cache_value("CMAKE_INSTALL_SYSCONFDIR") or "etc"
    if not sysconf.startswith("/"):
        sysconf = "/" + sysconf if prefix == "/usr" else f"{prefix}/{sysconf}"
    paths = {
        "root": dest,
        "bin": dest + prefix + "/bin/tokenbouncer",
        "unit": dest + cache_value("TOKENBOUNCER_SYSTEMD_UNIT_DIR") + "/tokenbouncer.service",
        "conf": dest + sysconf + "/tokenbouncer/tokenbouncer.conf",
        "doc": dest + prefix + "/share/doc/tokenbouncer",
        "stdout": r.stdout,
    }
    yield paths
    shutil.rmtree(dest, ignore_errors=True)


def test_build_script_installs_binary_unit_config_and_docs(staged):
    r = run([staged["bin"], "--version"], check=True)
    assert r.stdout.startswith("tokenbouncer ")
    assert r.stdout.strip() in staged["stdout"]  # build.sh ends by running the staged binary
    with open(staged["unit"]) as f, open(os.path.join(SOURCE, "config", "tokenbouncer.service")) as g:
        assert f.read() == g.read()
    with open(staged["conf"]) as f:
        assert f.read() == read("config/tokenbouncer.conf")
    for doc in ("README.md", "configuration.md", "kong.md", "kubernetes.md", "troubleshooting.md", "azure.md"):
        assert os.path.exists(os.path.join(staged["doc"], doc)), doc
    assert "/usr/etc/" not in staged["conf"]


def test_installed_example_config_passes_check(staged):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENBOUNCER_", "AZURE_"))}
    # The example's placeholders are valid as they are; a real deployment overrides them.
    r = run([staged["bin"], "--check", staged["conf"]], env=env)
    assert r.returncode == 0, r.stdout
    env.update(TOKENBOUNCER_PG_HOST="kong-db.postgres.database.azure.com",
               TOKENBOUNCER_PG_USER="kong-identity",
               TOKENBOUNCER_PG_AZURE_CLIENT_ID="11111111-2222-3333-4444-555555555555")
    r = run([staged["bin"], "--check", staged["conf"]], env=env)
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip() == f"configuration OK: {staged['conf']}"


def test_systemd_unit_verifies(staged, tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    with open(staged["unit"]) as f:
        unit = f.read()
    assert "ExecStart=/usr/bin/tokenbouncer /etc/tokenbouncer/tokenbouncer.conf\n" in unit
    # verify wants the ExecStart binary and its argument to exist: point them at the staged tree.
    unit = unit.replace("ExecStart=/usr/bin/tokenbouncer /etc/tokenbouncer/tokenbouncer.conf",
                        f"ExecStart={staged['bin']} {staged['conf']}")
    path = tmp_path / "tokenbouncer.service"
    path.write_text(unit)
    r = run([tool, "verify", str(path)], env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    assert r.returncode == 0 and "tokenbouncer.service" not in r.stderr, r.stdout + r.stderr


def test_systemd_unit_settings():
    unit = read("config/tokenbouncer.service")
    values = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, _, v = line.partition("=")
            values.setdefault(k, []).append(v)
    one = {k: v[-1] for k, v in values.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Restart"] == "on-failure"
    # Above shutdown_timeout's default, so systemd does not kill a graceful shutdown.
    conf = read("config/tokenbouncer.conf")
    default = int(re.search(r"^#shutdown_timeout = (\d+)", conf, re.M).group(1))
    assert int(one["TimeoutStopSec"].rstrip("s")) > default
    assert one["WatchdogSec"]
    assert int(one["LimitNOFILE"]) > int(re.search(r"^#max_client_conn = (\d+)", conf, re.M).group(1))
    for k in ("DynamicUser", "ProtectHome", "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "LockPersonality",
              "MemoryDenyWriteExecute", "RestrictNamespaces", "RestrictRealtime", "ProtectKernelTunables",
              "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname"):
        assert one.get(k) == "yes", k
    assert one["ProtectSystem"] == "strict"
    assert one["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert one["UMask"] == "0077" and one["RuntimeDirectory"] == "tokenbouncer"


# --- runtime libraries -------------------------------------------------------------------------

def debian_package(path):
    """The Debian package that ships `path` (tries the merged-/usr twin of the path too)."""
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        candidates.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    for p in candidates:
        r = run(["dpkg", "-S", p])
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    return None


@pytest.mark.skipif(sanitized(), reason="the image is never a sanitizer build")
def test_runtime_stage_installs_every_shared_library():
    ldd = run(["ldd", binary()], check=True).stdout
    libs = {}
    for line in ldd.splitlines():
        m = re.search(r"(\S+) => (\S+)", line) or re.search(r"^\s*(/\S+)", line)
        if not m:
            continue  # linux-vdso
        path = m.group(2) if m.lastindex == 2 else m.group(1)
        assert path != "not", f"unresolved library: {line}"
        libs[path] = debian_package(path)
    assert all(libs.values()), f"libraries no package ships: {[p for p, k in libs.items() if not k]}"
    # libc6 is essential and in every Debian image; everything else must be installed explicitly.
    missing = {k for k in libs.values()} - runtime_packages() - {"libc6"}
    assert not missing, f"the runtime stage does not install {sorted(missing)} (ldd: {libs})"
    assert "ca-certificates" in runtime_packages()  # verify-full against the system trust store
