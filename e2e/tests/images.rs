//! The gateway image trees under `images/`: the Buildroot external tree has the shape
//! Buildroot's `check-package` asks for (and passes it when a Buildroot checkout is at hand),
//! and its init script passes shellcheck and supervises edgecore as it says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{wait_for, TempDir};

const PACKAGES: &[&str] = &["edgecore", "edge-mqtt"];
const T: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn tree() -> PathBuf {
    repo().join("images/buildroot")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn upper(pkg: &str) -> String {
    pkg.to_uppercase().replace('-', "_")
}

/// check-package's `lib_hash` rules: three fields, two spaces apart, a known hash type of the
/// right length; and here also: the hashed file is the repository's, with that hash.
fn check_hash(pkg: &str, licenses: &[&str], errors: &mut Vec<String>) {
    let path = tree().join(format!("package/{pkg}/{pkg}.hash"));
    let mut hashed = Vec::new();
    for (n, line) in read(&path).lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 || line != format!("{}  {}  {}", f[0], f[1], f[2]) {
            errors.push(format!("{pkg}.hash:{}: not <type>  <hash>  <file>", n + 1));
            continue;
        }
        if f[0] != "sha256" || f[1].len() != 64 || !f[1].bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(format!("{pkg}.hash:{}: not a sha256", n + 1));
        }
        let data = std::fs::read(repo().join(f[2])).unwrap_or_default();
        let sum = ring::digest::digest(&ring::digest::SHA256, &data);
        let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if hex != f[1] {
            errors.push(format!("{pkg}.hash: {} has sha256 {hex}", f[2]));
        }
        hashed.push(f[2].to_owned());
    }
    for l in licenses {
        if !hashed.iter().any(|h| h == l) {
            errors.push(format!("{pkg}.hash: no hash for license file {l}"));
        }
    }
}

/// check-package's `lib_mk` rules that apply here: the 80-hash header, every variable
/// prefixed with the package's name, recipes indented with tabs, one space before `\`.
fn check_mk(pkg: &str, errors: &mut Vec<String>) -> Vec<String> {
    let prefix = upper(pkg);
    let text = read(&tree().join(format!("package/{pkg}/{pkg}.mk")));
    let lines: Vec<&str> = text.lines().collect();
    let bar = "#".repeat(80);
    if lines.len() < 6
        || lines[0] != bar
        || lines[1] != "#"
        || lines[2] != format!("# {pkg}")
        || lines[3] != "#"
        || lines[4] != bar
        || !lines[5].is_empty()
    {
        errors.push(format!("{pkg}.mk: not the standard header"));
    }
    let mut licenses = Vec::new();
    let mut in_define = false;
    for (n, line) in lines.iter().enumerate() {
        let at = format!("{pkg}.mk:{}", n + 1);
        if line.starts_with("endef") {
            in_define = false;
            continue;
        }
        if in_define {
            if !line.is_empty() && !line.starts_with('\t') {
                errors.push(format!("{at}: a recipe line not indented with a tab"));
            }
            continue;
        }
        let name = line.strip_prefix("define ").unwrap_or(line);
        in_define = line.starts_with("define ");
        let var: String = name
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if var.contains('_')
            && !line.starts_with('#')
            && !var.starts_with(&format!("{prefix}_"))
            && var != "BR_NO_CHECK_HASH_FOR"
        {
            errors.push(format!("{at}: {var} is not prefixed with {prefix}_"));
        }
        if let Some(l) = line.strip_prefix(&format!("{prefix}_LICENSE_FILES = ")) {
            licenses.extend(l.split_whitespace().map(str::to_owned));
        }
        if line.ends_with('\\') && (line.ends_with("  \\") || line.ends_with("\t\\")) {
            errors.push(format!("{at}: more than one space before a backslash"));
        }
    }
    if lines.last() != Some(&"$(eval $(cargo-package))") {
        errors.push(format!(
            "{pkg}.mk: does not end with $(eval $(cargo-package))"
        ));
    }
    licenses
}

/// check-package's `lib_config` rules: attributes indented with one tab, help text a tab, two
/// spaces and at most 62 characters; and here: every symbol is the package's.
fn check_config(pkg: &str, errors: &mut Vec<String>) {
    let symbol = format!("BR2_PACKAGE_{}", upper(pkg));
    let text = read(&tree().join(format!("package/{pkg}/Config.in")));
    let mut in_help = false;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{pkg}/Config.in:{}", n + 1);
        let word = line.split_whitespace().next().unwrap_or("");
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if in_help && line.starts_with("\t  ") {
            if line.chars().count() > "\t  ".len() + 62 {
                errors.push(format!("{at}: help text longer than 62 characters"));
            }
            continue;
        }
        in_help = false;
        match word {
            "bool" | "string" | "default" | "depends" | "select" | "prompt" | "help" => {
                if !line.starts_with(&format!("\t{word}")) {
                    errors.push(format!("{at}: {word} not indented with one tab"));
                }
                in_help = word == "help";
            }
            "config" | "choice" | "endchoice" | "if" | "endif" | "comment" | "menu" | "endmenu"
            | "source" => {
                if line.starts_with(char::is_whitespace) {
                    errors.push(format!("{at}: {word} indented"));
                }
                if word == "config" {
                    let name = line.split_whitespace().nth(1).unwrap_or("");
                    if name != symbol && !name.starts_with(&format!("{symbol}_")) {
                        errors.push(format!("{at}: {name} is not {symbol}[_*]"));
                    }
                }
            }
            _ => errors.push(format!("{at}: unexpected {line:?}")),
        }
    }
}

#[test]
fn the_buildroot_tree_has_the_shape_check_package_asks_for() {
    let mut errors = Vec::new();
    let desc = read(&tree().join("external.desc"));
    let name = desc
        .lines()
        .find_map(|l| l.strip_prefix("name: "))
        .expect("external.desc has a name");
    assert!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{name}"
    );
    let path_var = format!("BR2_EXTERNAL_{name}_PATH");
    let top = read(&tree().join("Config.in"));
    let mk = read(&tree().join("external.mk"));
    assert!(mk.contains(&format!("$({path_var})/package/")), "{mk}");
    for pkg in PACKAGES {
        let dir = tree().join("package").join(pkg);
        assert!(
            top.contains(&format!("source \"${path_var}/package/{pkg}/Config.in\"")),
            "Config.in does not source {pkg}"
        );
        for f in [
            "Config.in".to_owned(),
            format!("{pkg}.mk"),
            format!("{pkg}.hash"),
        ] {
            assert!(dir.join(&f).is_file(), "package/{pkg}/{f} missing");
        }
        let licenses = check_mk(pkg, &mut errors);
        assert!(!licenses.is_empty(), "{pkg}.mk names no license file");
        let licenses: Vec<&str> = licenses.iter().map(String::as_str).collect();
        check_hash(pkg, &licenses, &mut errors);
        check_config(pkg, &mut errors);
    }
    // The init script: named S<NN><DAEMON>, its PIDFILE as the manual's, not executable in
    // the tree (the .mk installs it 0755).
    let s99 = tree().join("package/edgecore/S99edgecore");
    let text = read(&s99);
    assert!(text.contains("\nDAEMON=\"edgecore\"\n"));
    assert!(text.contains("\nPIDFILE=\"/var/run/$DAEMON.pid\"\n"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&s99).unwrap().permissions());
    assert_eq!(
        mode & 0o111,
        0,
        "S99edgecore must not be executable in the tree"
    );
    for (n, line) in text.lines().enumerate() {
        if line.starts_with(' ') || line.trim_start_matches('\t').starts_with(' ') {
            errors.push(format!("S99edgecore:{}: indented with spaces", n + 1));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Buildroot's own `utils/check-package` over the tree, when `BUILDROOT_DIR` names a Buildroot
/// checkout (it needs Python with `magic` and `flake8`: Debian's python3-magic and
/// python3-flake8). The project vendors nothing of Buildroot, so without one this says so and
/// checks nothing more than the test above.
#[test]
fn check_package_passes_when_a_buildroot_checkout_is_at_hand() {
    let Some(br) = std::env::var_os("BUILDROOT_DIR") else {
        eprintln!("BUILDROOT_DIR not set: Buildroot's check-package not run");
        return;
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![tree()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path().strip_prefix(tree()).unwrap().to_owned());
            }
        }
    }
    files.sort();
    // Debian's interpreter, which python3-magic and python3-flake8 are installed for.
    let out = Command::new("/usr/bin/python3")
        .arg(Path::new(&br).join("utils/check-package"))
        .arg("-b")
        .args(&files)
        .current_dir(tree())
        .output()
        .expect("run python3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 warnings generated"), "{text}");
    assert!(
        !text.contains(" 0 lines processed"),
        "checked nothing: {text}"
    );
}

#[test]
fn the_init_script_passes_shellcheck_as_sh_and_dash() {
    for shell in ["sh", "dash"] {
        let out = Command::new("shellcheck")
            .args(["--external-sources", "-s", shell])
            .arg(tree().join("package/edgecore/S99edgecore"))
            .output()
            .expect("shellcheck (scripts/env.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The init script with its paths moved into a temp dir and a fake edgecore that records each
/// start and exits with the status in `exit` (absent: runs until SIGTERM).
struct Script {
    dir: TempDir,
}

impl Script {
    fn new() -> Script {
        let dir = TempDir::new("s99");
        let d = dir.path();
        for sub in ["bin", "run", "default"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let fake = format!(
            "#!/bin/sh\n\
             echo \"start $$ $*\" >>{d}/runs\n\
             trap 'echo \"term $$\" >>{d}/runs; exit 0' TERM\n\
             [ -f {d}/exit ] && exit \"$(cat {d}/exit)\"\n\
             while :; do sleep 0.05; done\n",
            d = d.display()
        );
        std::fs::write(d.join("bin/edgecore"), fake).unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(d.join("bin/edgecore"))
            .status()
            .unwrap();
        let script = read(&tree().join("package/edgecore/S99edgecore"))
            .replace("/usr/bin/", &format!("{}/bin/", d.display()))
            .replace("/var/run/", &format!("{}/run/", d.display()))
            .replace("/etc/default/", &format!("{}/default/", d.display()));
        std::fs::write(d.join("S99edgecore"), script).unwrap();
        std::fs::write(
            d.join("default/edgecore"),
            "EDGECORE_DATA_DIR=/data\nEDGECORE_ARGS=\"--log-level debug\"\n",
        )
        .unwrap();
        Script { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn action(&self, what: &str) -> std::process::Output {
        Command::new("dash")
            .arg(self.path("S99edgecore"))
            .arg(what)
            .output()
            .unwrap()
    }

    /// (event, pid) lines the fake wrote.
    fn runs(&self) -> Vec<(String, u32)> {
        std::fs::read_to_string(self.path("runs"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut w = l.split_whitespace();
                (
                    w.next().unwrap().to_owned(),
                    w.next().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    fn starts(&self) -> usize {
        self.runs().iter().filter(|(e, _)| e == "start").count()
    }
}

/// Running: present and not a zombie (the supervisor, detached by start-stop-daemon, is
/// reaped by whatever PID 1 is, which in a container may be nobody).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| {
            !st.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn the_init_script_respawns_with_back_off_and_stops_cleanly() {
    let s = Script::new();
    // Crashing: respawned after 1 s, then 2 s.
    std::fs::write(s.path("exit"), "1").unwrap();
    let t0 = Instant::now();
    let out = s.action("start");
    assert!(out.status.success(), "{out:?}");
    let mut at = Vec::new();
    for n in 1..=3 {
        wait_for(&format!("start {n}"), T, || (s.starts() >= n).then_some(()));
        at.push(t0.elapsed());
    }
    assert!(at[1] - at[0] >= Duration::from_millis(900), "{at:?}");
    assert!(at[2] - at[1] >= Duration::from_millis(1900), "{at:?}");
    let cmdline = std::fs::read_to_string(s.path("runs")).unwrap();
    assert!(
        cmdline.contains("run --data-dir /data --log-level debug"),
        "{cmdline}"
    );

    // Healthy again: the next start stays up, its PID in the pidfile; a second start is a no-op.
    std::fs::remove_file(s.path("exit")).unwrap();
    wait_for("start 4", T, || (s.starts() >= 4).then_some(()));
    let pid = s.runs().last().unwrap().1;
    wait_for("edgecore.pid", T, || {
        (std::fs::read_to_string(s.path("run/edgecore.pid"))
            .ok()?
            .trim()
            == pid.to_string())
        .then_some(())
    });
    let supervisor: u32 = read(&s.path("run/edgecore-supervise.pid"))
        .trim()
        .parse()
        .unwrap();
    let out = s.action("start");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already running"),
        "{out:?}"
    );
    assert!(alive(pid));

    // Stop: edgecore gets SIGTERM, both processes are gone, so are the pidfiles.
    let out = s.action("stop");
    assert!(out.status.success(), "{out:?}");
    assert!(
        s.runs().contains(&("term".to_owned(), pid)),
        "{:?}",
        s.runs()
    );
    assert!(!alive(supervisor) && !alive(pid));
    assert!(!s.path("run/edgecore.pid").exists());
    assert!(!s.path("run/edgecore-supervise.pid").exists());
    assert_eq!(s.starts(), 4, "nothing started after stop");
}

#[test]
fn exit_status_2_is_not_respawned() {
    let s = Script::new();
    std::fs::write(s.path("exit"), "2").unwrap();
    assert!(s.action("start").status.success());
    // The supervisor writes its pidfile before it starts edgecore and removes it when it
    // ends; start-stop-daemon may write it once more, late, with the same (then dead) PID.
    wait_for("the supervisor to give up", T, || {
        if s.starts() == 0 {
            return None;
        }
        match std::fs::read_to_string(s.path("run/edgecore-supervise.pid")) {
            Err(_) => Some(()),
            Ok(pid) => (!alive(pid.trim().parse().ok()?)).then_some(()),
        }
    });
    assert_eq!(s.starts(), 1, "a configuration error must not be respawned");
}

fn layer() -> PathBuf {
    repo().join("images/yocto/meta-edgecore")
}

#[test]
fn the_yocto_crates_file_is_current_with_cargo_lock() {
    let out = Command::new("/usr/bin/python3")
        .arg(repo().join("scripts/yocto-crates.py"))
        .arg("--check")
        .output()
        .expect("run scripts/yocto-crates.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_yocto_layer_declares_what_a_layer_and_the_recipe_need() {
    let conf = read(&layer().join("conf/layer.conf"));
    let compat = conf
        .lines()
        .find_map(|l| l.strip_prefix("LAYERSERIES_COMPAT_edgecore = "))
        .expect("LAYERSERIES_COMPAT_edgecore");
    for release in ["scarthgap", "styhead"] {
        assert!(compat.contains(release), "{compat}");
    }
    let recipe = read(&layer().join("recipes-edgecore/edgecore/edgecore_0.1.0.bb"));
    for line in [
        "inherit cargo cargo-update-recipe-crates systemd update-rc.d",
        "require ${BPN}-crates.inc",
        "SYSTEMD_SERVICE:${PN} = \"edgecore.service\"",
        "INITSCRIPT_NAME = \"edgecore\"",
    ] {
        assert!(recipe.lines().any(|l| l == line), "recipe lacks {line:?}");
    }
    // The LICENSE checksum is the repository's file.
    let md5 = Command::new("md5sum")
        .arg(repo().join("LICENSE"))
        .output()
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout);
    let md5 = md5.split_whitespace().next().unwrap();
    assert!(
        recipe.contains(&format!("file://LICENSE;md5={md5}")),
        "LIC_FILES_CHKSUM is not {md5}"
    );
    // Every cargo feature a PACKAGECONFIG names exists.
    let cargo = read(&repo().join("edge/edgecore/Cargo.toml"));
    for l in recipe.lines().filter(|l| l.starts_with("PACKAGECONFIG[")) {
        let feature = l
            .split("--features ")
            .nth(1)
            .unwrap()
            .split([',', '"'])
            .next()
            .unwrap();
        assert!(
            cargo
                .lines()
                .any(|c| c.starts_with(&format!("{feature} = "))),
            "no cargo feature {feature}"
        );
    }
}

/// oelint-adv over the layer (scripts/env.sh installs it in a venv and sets OELINT_ADV). The
/// generated crates file is linted as part of the recipe that requires it. Suppressed, with
/// reasons: the placeholder HOMEPAGE is not reachable (and the test must not use the network),
/// and BBCLASSEXTEND: a gateway daemon has no native or nativesdk use.
#[test]
fn the_yocto_layer_passes_oelint_adv_when_installed() {
    let Some(bin) = std::env::var_os("OELINT_ADV") else {
        eprintln!("OELINT_ADV not set (scripts/env.sh sets it): oelint-adv not run");
        return;
    };
    let out = Command::new(bin)
        .args(["--release", "scarthgap", "--quiet"])
        .args(["--suppress", "oelint.vars.homepageping"])
        .args(["--suppress", "oelint.var.bbclassextend"])
        .arg(layer().join("recipes-edgecore/edgecore/edgecore_0.1.0.bb"))
        .arg(layer().join("conf/layer.conf"))
        .output()
        .expect("run oelint-adv");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.trim().is_empty(), "oelint-adv: {text}");
}
