//! `setup` (and `gather_facts`): gathers host facts in ONE round trip. A
//! single `sh` script prints `key=value` lines plus tagged address/route
//! lines and, last, the environment; the controller assembles Ansible's fact
//! names (`ansible_` and the name, as the setup module returns them).
//! `gather_subset` picks ansible-core's collectors (`min` always unless
//! `!min`, `hardware`, `network`, `virtual`, or one by name, `!` taking one
//! away); the hardware collector adds `ansible_mounts` (each mount's
//! `statvfs` under `gather_timeout`), `ansible_devices` and
//! `ansible_device_links`, shaped as ansible-core's Linux collector makes
//! them.

use minijinja::Value;

use crate::fnmatch::Glob;
use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::vars::VarMap;

pub struct Setup;

const ENV_MARK: &str = "@@KEEL-ENV@@\n";

/// The gathering script. Every command tolerates absence (minimal images).
const SCRIPT: &str = r#"exec 2>/dev/null
h=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)
echo "hostname=${h%%.*}"
f=$(hostname -f 2>/dev/null); [ -n "$f" ] || f=$h
echo "fqdn=$f"
echo "nodename=$(uname -n)"
echo "kernel=$(uname -r)"
echo "kernel_version=$(uname -v)"
echo "machine=$(uname -m)"
echo "system=$(uname -s)"
if [ -r /etc/os-release ]; then (. /etc/os-release; echo "os_id=$ID"; echo "os_name=$NAME"; echo "os_version_id=$VERSION_ID"; echo "os_codename=$VERSION_CODENAME"; echo "os_like=$ID_LIKE"; echo "os_pretty=$PRETTY_NAME"); fi
[ -r /etc/debian_version ] && echo "debian_version=$(cat /etc/debian_version)"
awk '/^MemTotal:/{print "memtotal_kb="$2} /^MemFree:/{print "memfree_kb="$2} /^MemAvailable:/{print "memavail_kb="$2} /^SwapTotal:/{print "swaptotal_kb="$2} /^SwapFree:/{print "swapfree_kb="$2} /^Buffers:/{print "buffers_kb="$2} /^Cached:/{print "cached_kb="$2}' /proc/meminfo
echo "vcpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
echo "sockets=$(grep '^physical id' /proc/cpuinfo | sort -u | wc -l)"
echo "cores=$(grep -m1 '^cpu cores' /proc/cpuinfo | sed 's/.*: *//')"
echo "siblings=$(grep -m1 '^siblings' /proc/cpuinfo | sed 's/.*: *//')"
grep '^model name' /proc/cpuinfo | sed 's/.*: */CPU /'
if [ -d /run/systemd/system ]; then echo service_mgr=systemd; else echo "service_mgr=$(cat /proc/1/comm)"; fi
for m in apt-get dnf yum zypper apk pacman; do if command -v $m >/dev/null 2>&1; then echo "pkg_mgr=$m"; break; fi; done
echo "user_id=$(id -un)"
echo "user_uid=$(id -u)"
echo "user_gid=$(id -g)"
pw=$(getent passwd "$(id -un)")
echo "user_gecos=$(echo "$pw" | cut -d: -f5)"
echo "user_dir=$(echo "$pw" | cut -d: -f6)"
echo "user_shell=$(echo "$pw" | cut -d: -f7)"
echo "date=$(date '+%Y|%m|%d|%H|%M|%S|%s|%Z|%z|%A|%u|%j|%W|%b|%B|%y|%N')"
echo "date_utc=$(date -u '+%Y-%m-%dT%H:%M:%SZ|%Y-%m-%dT%H:%M:%S')"
[ -r /proc/uptime ] && echo "uptime=$(cut -d' ' -f1 /proc/uptime)"
command -v systemd-detect-virt >/dev/null 2>&1 && echo "virt=$(systemd-detect-virt)"
[ -d /sys/fs/selinux ] && echo selinux=1
for py in python3 python; do if command -v $py >/dev/null 2>&1; then $py -I -S -c 'import sys; v=sys.version_info; print("python=%s|%d|%d|%d|%s|%d|%s" % (sys.executable, v[0], v[1], v[2], v[3], v[4], sys.implementation.name))'; break; fi; done
if command -v ip >/dev/null 2>&1; then
  ip -o addr show | sed 's/^/ADDR /'
  echo "ROUTE4 $(ip -o -4 route get 1.1.1.1 | head -n1)"
  echo "ROUTE6 $(ip -o -6 route get 2606:4700:4700::1111 | head -n1)"
fi
for i in /sys/class/net/*; do n=${i##*/}; echo "IFACE $n $(cat $i/address) $(cat $i/mtu) $(cat $i/operstate) $(cat $i/type)"; done
printf '@@KEEL-ENV@@\n'
env
"#;

/// The arguments `setup` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "setup",
    sets: &[&[
        &["gather_subset"],
        &["filter"],
        &["gather_timeout"],
        &["fact_path"],
        &["parallel"],
    ]],
};

#[async_trait::async_trait]
impl Module for Setup {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let subset = a
            .list(&["gather_subset"])?
            .unwrap_or_else(|| vec!["all".to_string()]);
        let filter = a.list(&["filter"])?.unwrap_or_default();
        let fact_path = a
            .string(&["fact_path"])?
            .unwrap_or_else(|| "/etc/ansible/facts.d".into());
        let timeout = match a.string(&["gather_timeout"])? {
            Some(t) => t.trim().parse::<u64>().map_err(|_| {
                ModuleError::Args(format!(
                    "gather_timeout must be a whole number of seconds, got '{t}'"
                ))
            })?,
            None => 10,
        };
        a.ignore(&["parallel"]);
        a.finish()?;
        let collectors = select_collectors(&subset).map_err(ModuleError::Failed)?;
        let wants = |c: &str| collectors.iter().any(|x| x == c);
        // Local facts and the hardware collector's mounts and devices come
        // in the same round trip, after markers.
        let mut script = format!("( {SCRIPT}\n)\n");
        if wants("hardware") {
            script.push_str(&format!(
                "printf '%s' '{HW_MARK}'\n( {} )\n",
                hardware_script(timeout)
            ));
        }
        script.push_str(&format!(
            "printf '%s' '{LOCAL_MARK}'\n{}",
            local_facts_script(&fact_path)
        ));
        let out = ctx.run(script, None).await?;
        let all = out.stdout_str();
        let (text, local_out) = all.split_once(LOCAL_MARK).unwrap_or((&all, ""));
        let (text, hw_out) = text.split_once(HW_MARK).unwrap_or((text, ""));
        let (main, env) = text.split_once(ENV_MARK).unwrap_or((text, ""));
        let mut facts = build_facts(main, env);
        let (local, mut warnings) = local_facts(local_out);
        facts.insert("local".into(), local);
        if wants("hardware") {
            let (hw, hw_warnings) = hardware_facts(hw_out);
            facts.extend(hw);
            warnings.extend(hw_warnings);
        }
        let interfaces: Vec<String> = facts
            .get("interfaces")
            .and_then(|v| v.try_iter().ok())
            .map(|i| i.map(|v| v.to_string()).collect())
            .unwrap_or_default();
        facts.retain(|k, _| wants(fact_collector(k, &interfaces)));
        // The two facts about the gathering itself have no `ansible_`
        // prefix, so only a filter written for them keeps them (as
        // ansible-core: `module*` keeps `module_setup`, `ansible_*` does not).
        let mut keep_own: Box<dyn Fn(&str) -> bool> = Box::new(|_| true);
        if !filter.is_empty() {
            let pats: Vec<Glob> = filter
                .iter()
                .map(|f| Glob::new(f.strip_prefix("ansible_").unwrap_or(f)))
                .collect();
            facts.retain(|k, _| pats.iter().any(|p| p.is_match(k)));
            let written: Vec<Glob> = filter.iter().map(|f| Glob::new(f)).collect();
            keep_own = Box::new(move |k| written.iter().any(|p| p.is_match(k)));
        }
        // Named as the setup module returns them (`ansible_` prefix); the
        // executor strips the prefix under `ansible_facts`.
        let prefixed: Vec<(String, Value)> = facts
            .iter()
            .map(|(k, v)| (format!("ansible_{k}"), v.clone()))
            .collect();
        // What setup itself says, whatever the subset.
        let mut prefixed = prefixed;
        if keep_own("gather_subset") {
            prefixed.push((
                "gather_subset".into(),
                Value::from(
                    subset
                        .iter()
                        .map(|s| Value::from(s.as_str()))
                        .collect::<Vec<_>>(),
                ),
            ));
        }
        if keep_own("module_setup") {
            prefixed.push(("module_setup".into(), Value::from(true)));
        }
        let mut res = ModuleResult::ok();
        if !warnings.is_empty() {
            res.data.insert("warnings".into(), Value::from(warnings));
        }
        res.data
            .insert("ansible_facts".into(), dict(prefixed.clone()));
        res.facts = Some(prefixed.into_iter().collect());
        Ok(Plan::done(res))
    }
}

/// Printed after the main facts, before the local ones.
const LOCAL_MARK: &str = "\u{1e}keel-local\u{1e}";

/// Printed before the hardware collector's mounts and devices.
const HW_MARK: &str = "\u{1e}keel-hardware\u{1e}";
/// Every name ansible-core 2.19's `gather_subset` accepts (its error
/// message lists them in this order).
const VALID_SUBSETS: &[&str] = &[
    "all",
    "all_ipv4_addresses",
    "all_ipv6_addresses",
    "apparmor",
    "architecture",
    "caps",
    "chroot",
    "cmdline",
    "date_time",
    "default_ipv4",
    "default_ipv6",
    "devices",
    "distribution",
    "distribution_major_version",
    "distribution_release",
    "distribution_version",
    "dns",
    "effective_group_ids",
    "effective_user_id",
    "env",
    "facter",
    "fibre_channel_wwn",
    "fips",
    "hardware",
    "interfaces",
    "is_chroot",
    "iscsi",
    "kernel",
    "kernel_version",
    "loadavg",
    "local",
    "lsb",
    "machine",
    "machine_id",
    "mounts",
    "network",
    "nvme",
    "ohai",
    "os_family",
    "pkg_mgr",
    "platform",
    "processor",
    "processor_cores",
    "processor_count",
    "python",
    "python_version",
    "real_user_id",
    "selinux",
    "service_mgr",
    "ssh_host_key_dsa_public",
    "ssh_host_key_ecdsa_public",
    "ssh_host_key_ed25519_public",
    "ssh_host_key_rsa_public",
    "ssh_host_pub_keys",
    "ssh_pub_keys",
    "system",
    "system_capabilities",
    "system_capabilities_enforced",
    "systemd",
    "user",
    "user_dir",
    "user_gecos",
    "user_gid",
    "user_id",
    "user_shell",
    "user_uid",
    "virtual",
    "virtualization_role",
    "virtualization_tech_guest",
    "virtualization_tech_host",
    "virtualization_type",
];

/// The three collectors outside `min`.
const GROUPS: &[&str] = &["hardware", "network", "virtual"];

/// The collectors of `min` (ansible-core's `minimal_gather_subset`).
const MIN_PARTS: &[&str] = &[
    "apparmor",
    "caps",
    "cmdline",
    "date_time",
    "distribution",
    "dns",
    "env",
    "fips",
    "local",
    "lsb",
    "pkg_mgr",
    "platform",
    "python",
    "selinux",
    "service_mgr",
    "ssh_pub_keys",
    "user",
];

/// The collector a `gather_subset` name stands for (a fact's name stands
/// for the collector that gathers it).
fn collector(name: &str) -> &str {
    match name {
        "devices" | "mounts" | "processor" | "processor_cores" | "processor_count" => "hardware",
        "interfaces" | "all_ipv4_addresses" | "all_ipv6_addresses" | "default_ipv4"
        | "default_ipv6" => "network",
        n if n.starts_with("virtualization_") => "virtual",
        "architecture" | "kernel" | "kernel_version" | "machine" | "machine_id" | "system" => {
            "platform"
        }
        n if n.starts_with("distribution_") || n == "os_family" => "distribution",
        "python_version" => "python",
        "system_capabilities" | "system_capabilities_enforced" => "caps",
        n if n.starts_with("ssh_host_") => "ssh_pub_keys",
        "real_user_id" | "effective_user_id" | "effective_group_ids" => "user",
        n if n.starts_with("user_") => "user",
        n => n,
    }
}

/// The collectors a `gather_subset` list selects, as ansible-core 2.19
/// selects them (checked case by case against it): `min` always, unless
/// `!min`; `all` adds every collector, `!all` keeps only what is named;
/// a name adds its collector and `!name` takes it away. The hardware,
/// network and virtual collectors bring `platform` with them.
fn select_collectors(subsets: &[String]) -> Result<Vec<String>, String> {
    let mut add: Vec<&str> = Vec::new();
    let mut exclude: Vec<&str> = Vec::new();
    let mut no_min = false;
    for s in subsets {
        let s = s.trim();
        let (neg, name) = match s.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, s),
        };
        if !VALID_SUBSETS.contains(&name) && name != "min" {
            return Err(format!(
                "Bad subset '{name}' given to Ansible. gather_subset options allowed: {}",
                VALID_SUBSETS.join(", ")
            ));
        }
        match (neg, name) {
            (false, "all") => {
                add.extend(GROUPS);
                add.extend(MIN_PARTS);
            }
            (false, "min") => add.extend(MIN_PARTS),
            (true, "min") => no_min = true,
            // Only what is named beside it is added: nothing to take away.
            (true, "all") => {}
            (false, n) => add.push(collector(n)),
            (true, n) => exclude.push(collector(n)),
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut push = |c: &str| {
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    };
    if !no_min {
        MIN_PARTS.iter().for_each(|c| push(c));
    }
    for c in add {
        push(c);
    }
    out.retain(|c| {
        let min_part = MIN_PARTS.contains(&c.as_str());
        !(exclude.contains(&c.as_str()) || no_min && min_part)
    });
    if out.iter().any(|c| GROUPS.contains(&c.as_str())) && !out.iter().any(|c| c == "platform") {
        out.push("platform".to_string());
    }
    Ok(out)
}

/// The collector that gathers fact `key` (no `ansible_` prefix);
/// `interfaces` names the per-interface facts.
fn fact_collector(key: &str, interfaces: &[String]) -> &'static str {
    match key {
        "memfree_mb" | "memtotal_mb" | "memory_mb" | "swapfree_mb" | "swaptotal_mb"
        | "uptime_seconds" | "mounts" | "devices" | "device_links" | "loadavg" | "lvm"
        | "form_factor" => "hardware",
        k if k.starts_with("processor")
            || k.starts_with("bios_")
            || k.starts_with("product_")
            || k.starts_with("board_")
            || k.starts_with("chassis_") =>
        {
            "hardware"
        }
        "all_ipv4_addresses"
        | "all_ipv6_addresses"
        | "interfaces"
        | "default_ipv4"
        | "default_ipv6"
        | "locally_reachable_ips" => "network",
        k if interfaces
            .iter()
            .any(|i| i.replace(['-', ':', '.'], "_") == k) =>
        {
            "network"
        }
        k if k.starts_with("virtualization_") => "virtual",
        "env" => "env",
        "local" => "local",
        "pkg_mgr" => "pkg_mgr",
        "python" | "python_version" => "python",
        "service_mgr" => "service_mgr",
        "date_time" => "date_time",
        "dns" => "dns",
        "lsb" => "lsb",
        "apparmor" => "apparmor",
        "fips" => "fips",
        "cmdline" | "proc_cmdline" => "cmdline",
        k if k.starts_with("selinux") => "selinux",
        k if k.starts_with("system_capabilities") => "caps",
        k if k.starts_with("ssh_host_key") => "ssh_pub_keys",
        k if k.starts_with("distribution") || k == "os_family" => "distribution",
        k if k.starts_with("user_") || k.starts_with("real_") || k.starts_with("effective_") => {
            "user"
        }
        _ => "platform",
    }
}

/// Mounts and block devices, for the hardware collector: ansible-core's
/// `get_mount_facts` (the mount table, bind mounts from `findmnt`, UUIDs
/// from `lsblk`, sizes from `statvfs` through `stat -f`, each under
/// `gather_timeout`) and `get_device_facts` (`/sys/block`, `/dev/disk/by-*`).
fn hardware_script(timeout: u64) -> String {
    format!(
        r#"exec 2>/dev/null
T={timeout}
command -v timeout >/dev/null 2>&1 && TO="timeout $T" || TO=
command -v findmnt >/dev/null 2>&1 && findmnt -lnur -o TARGET,SOURCE | sed 's/^/BIND /'
command -v lsblk >/dev/null 2>&1 && lsblk --list --noheadings --paths --output NAME,UUID --exclude 2 | sed 's/^/UUID /'
MT=/etc/mtab; [ -r "$MT" ] || MT=/proc/mounts
while read -r dev mnt fs opts dump pass rest; do
  case "$dev" in /*|\\*|*:/*) ;; *) continue;; esac
  [ "$fs" = none ] && continue
  p=$(printf '%b' "$(printf '%s' "$mnt" | sed 's/\\\([0-7][0-7][0-7]\)/\\0\1/g')")
  st=$($TO stat -f -c '%S %s %b %f %a %c %d' -- "$p"); rc=$?
  printf 'MOUNT\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$dev" "$mnt" "$fs" "$opts" "$dump" "$pass" "$rc" "$st"
done < "$MT"
for t in id uuid label; do
  for l in /dev/disk/by-$t/*; do [ -L "$l" ] || continue; r=$(readlink -f "$l"); echo "LINK $t ${{r##*/}} ${{l##*/}}"; done
done
for s in /sys/block/*/slaves/*; do [ -e "$s" ] || continue; d=${{s#/sys/block/}}; echo "LINK master ${{s##*/}} ${{d%%/*}}"; done
for b in /sys/block/*; do
  [ -e "$b" ] || continue
  n=${{b##*/}}
  echo "DEV $n"
  for k in device/vendor device/model device/sas_address device/sas_device_handle device/serial removable queue/discard_max_hw_bytes queue/discard_granularity queue/rotational queue/scheduler size queue/logical_block_size queue/hw_sector_size; do
    [ -r "$b/$k" ] && printf 'DEVF %s %s\n' "${{k##*/}}" "$(cat "$b/$k" | tr '\n' ' ')"
  done
  for h in "$b"/holders/dm-*; do [ -e "$h" ] || continue; echo "HOLD $(cat "$h/dm/name" || echo "${{h##*/}}")"; done
  for pdir in "$b"/"$n"*; do
    [ -d "$pdir" ] || continue
    pn=${{pdir##*/}}
    echo "PART $pn $(cat "$pdir/start" || echo 0) $(cat "$pdir/size" || echo 0) $(cat "$pdir/queue/logical_block_size" || cat "$pdir/queue/hw_sector_size" || echo 512)"
    for h in "$pdir"/holders/dm-*; do [ -e "$h" ] || continue; echo "PHOLD $pn $(cat "$h/dm/name" || echo "${{h##*/}}")"; done
  done
done
"#
    )
}

/// `bytes_to_human` of ansible-core: two decimals and the largest unit
/// the size reaches (`0.00 Bytes`, `256.00 GB`).
fn bytes_to_human(size: f64) -> String {
    const UNITS: &[(&str, f64)] = &[
        ("YB", 1208925819614629174706176.0),
        ("ZB", 1180591620717411303424.0),
        ("EB", 1152921504606846976.0),
        ("PB", 1125899906842624.0),
        ("TB", 1099511627776.0),
        ("GB", 1073741824.0),
        ("MB", 1048576.0),
        ("KB", 1024.0),
    ];
    for (suffix, limit) in UNITS {
        if size >= *limit {
            return format!("{:.2} {suffix}", size / limit);
        }
    }
    format!("{size:.2} Bytes")
}

/// A partition: its name and facts.
type Part = (String, Vec<(String, Value)>);
/// A block device as the script prints it: name, `/sys/block` files,
/// holders, partitions.
type Device = (String, Vec<(String, String)>, Vec<String>, Vec<Part>);

/// `ansible_mounts`, `ansible_devices` and `ansible_device_links` from the
/// output of [`hardware_script`], and the warnings of mounts whose size
/// could not be read in time.
fn hardware_facts(out: &str) -> (Vec<(String, Value)>, Vec<String>) {
    let mut binds: Vec<&str> = Vec::new();
    let mut uuids: Vec<(&str, &str)> = Vec::new();
    let mut mounts: Vec<(String, Vec<(String, Value)>)> = Vec::new();
    let mut warnings = Vec::new();
    let mut links: Vec<(String, String, String)> = Vec::new();
    let mut devices: Vec<Device> = Vec::new();
    let unescape = |s: &str| -> String {
        let mut out = String::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            {
                let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
                out.push(v as char);
                i += 4;
            } else {
                out.push(b[i] as char);
                i += 1;
            }
        }
        out
    };
    for line in out.lines() {
        if let Some(r) = line.strip_prefix("BIND ") {
            let f: Vec<&str> = r.split_whitespace().collect();
            if f.len() >= 2 && f[1].ends_with(']') {
                binds.push(f[0]);
            }
        } else if let Some(r) = line.strip_prefix("UUID ") {
            let f: Vec<&str> = r.split_whitespace().collect();
            if f.len() >= 2 {
                uuids.push((f[0], f[1]));
            }
        } else if let Some(r) = line.strip_prefix("MOUNT\t") {
            let f: Vec<&str> = r.splitn(8, '\t').collect();
            if f.len() < 8 {
                continue;
            }
            let (device, mount) = (unescape(f[0]), unescape(f[1]));
            let mut options = unescape(f[3]);
            if binds.iter().any(|b| unescape(b) == mount)
                && !options.split(',').any(|o| o == "bind")
            {
                options.push_str(",bind");
            }
            let num = |s: &str| s.trim().parse::<i64>().unwrap_or(0);
            let mut info: Vec<(String, Value)> = vec![
                ("mount".into(), Value::from(mount.clone())),
                ("device".into(), Value::from(device.clone())),
                ("fstype".into(), Value::from(unescape(f[2]))),
                ("options".into(), Value::from(options)),
                ("dump".into(), Value::from(num(f[4]))),
                ("passno".into(), Value::from(num(f[5]))),
            ];
            let st: Vec<u64> = f[7]
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            if f[6] == "124" {
                warnings.push(format!(
                    "Timeout exceeded when getting mount info for {mount}"
                ));
                info.push((
                    "note".into(),
                    Value::from("Could not get extra information due to timeout"),
                ));
            } else {
                if let [frsize, bsize, blocks, bfree, bavail, files, ffree] = st[..] {
                    info.extend([
                        ("size_total".into(), Value::from(frsize * blocks)),
                        ("size_available".into(), Value::from(frsize * bavail)),
                        ("block_size".into(), Value::from(bsize)),
                        ("block_total".into(), Value::from(blocks)),
                        ("block_available".into(), Value::from(bavail)),
                        (
                            "block_used".into(),
                            Value::from(blocks.saturating_sub(bfree)),
                        ),
                        ("inode_total".into(), Value::from(files)),
                        ("inode_available".into(), Value::from(ffree)),
                        (
                            "inode_used".into(),
                            Value::from(files.saturating_sub(ffree)),
                        ),
                    ]);
                }
                let uuid = uuids
                    .iter()
                    .find(|(d, _)| *d == device)
                    .map(|(_, u)| *u)
                    .unwrap_or("N/A");
                info.push(("uuid".into(), Value::from(uuid)));
            }
            info.sort_by(|a, b| a.0.cmp(&b.0));
            // A mount point listed twice keeps its first place and the
            // last entry's information (a Python dict).
            match mounts.iter_mut().find(|(m, _)| *m == mount) {
                Some(slot) => slot.1 = info,
                None => mounts.push((mount, info)),
            }
        } else if let Some(r) = line.strip_prefix("LINK ") {
            let f: Vec<&str> = r.splitn(3, ' ').collect();
            if f.len() == 3 {
                links.push((f[0].to_string(), f[1].to_string(), f[2].to_string()));
            }
        } else if let Some(n) = line.strip_prefix("DEV ") {
            devices.push((n.to_string(), Vec::new(), Vec::new(), Vec::new()));
        } else if let Some(r) = line.strip_prefix("DEVF ") {
            if let (Some(d), Some((k, v))) = (devices.last_mut(), r.split_once(' ')) {
                d.1.push((k.to_string(), v.trim().to_string()));
            }
        } else if let Some(h) = line.strip_prefix("HOLD ") {
            if let Some(d) = devices.last_mut() {
                d.2.push(h.to_string());
            }
        } else if let Some(r) = line.strip_prefix("PART ") {
            let f: Vec<&str> = r.split_whitespace().collect();
            if let (Some(d), [name, start, size, sectorsize]) = (devices.last_mut(), &f[..]) {
                let ss: u64 = sectorsize.parse().unwrap_or(512).max(1);
                let sectors = size.parse::<u64>().unwrap_or(0) * 512 / ss;
                d.3.push((
                    name.to_string(),
                    vec![
                        ("start".into(), Value::from(*start)),
                        ("sectorsize".into(), Value::from(*sectorsize)),
                        ("sectors".into(), Value::from(sectors)),
                        (
                            "size".into(),
                            Value::from(bytes_to_human(sectors as f64 * ss as f64)),
                        ),
                    ],
                ));
            }
        } else if let Some(r) = line.strip_prefix("PHOLD ") {
            if let (Some(d), Some((p, h))) = (devices.last_mut(), r.split_once(' ')) {
                if let Some(part) = d.3.iter_mut().find(|(n, _)| n == p) {
                    let mut hs: Vec<Value> = part
                        .1
                        .iter()
                        .find(|(k, _)| k == "holders")
                        .map(|(_, v)| v.try_iter().map(|i| i.collect()).unwrap_or_default())
                        .unwrap_or_default();
                    hs.push(Value::from(h));
                    part.1.retain(|(k, _)| k != "holders");
                    part.1.push(("holders".into(), Value::from(hs)));
                }
            }
        }
    }
    // links[type][device] = sorted link names
    let link_types = [
        ("ids", "id"),
        ("uuids", "uuid"),
        ("labels", "label"),
        ("masters", "master"),
    ];
    let links_of = |name: &str| -> Value {
        dict(link_types.iter().map(|(key, t)| {
            let mut v: Vec<String> = links
                .iter()
                .filter(|(lt, target, _)| lt == t && target == name)
                .map(|(_, _, l)| l.clone())
                .collect();
            v.sort();
            (key.to_string(), Value::from(v))
        }))
    };
    let all_links = dict(link_types.iter().map(|(key, t)| {
        let mut targets: Vec<String> = links
            .iter()
            .filter(|(lt, _, _)| lt == t)
            .map(|(_, target, _)| target.clone())
            .collect();
        targets.sort();
        targets.dedup();
        let per: Vec<(String, Value)> = targets
            .iter()
            .map(|target| {
                let mut v: Vec<String> = links
                    .iter()
                    .filter(|(lt, tg, _)| lt == t && tg == target)
                    .map(|(_, _, l)| l.clone())
                    .collect();
                v.sort();
                (target.clone(), Value::from(v))
            })
            .collect();
        (key.to_string(), dict(per))
    }));
    let mut devs: Vec<(String, Value)> = Vec::new();
    for (name, fields, holders, parts) in devices {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let opt = |k: &str| get(k).map(Value::from).unwrap_or(Value::from(()));
        let sectorsize = get("logical_block_size")
            .or(get("hw_sector_size"))
            .unwrap_or_else(|| "512".into());
        let ss: u64 = sectorsize.parse().unwrap_or(512).max(1);
        let sectors = get("size").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512 / ss;
        let scheduler = get("scheduler")
            .and_then(|s| {
                let open = s.find('[')?;
                let close = s.rfind(']')?;
                (close > open).then(|| s[open + 1..close].to_string())
            })
            .unwrap_or_default();
        let uuid_of = |p: &str| {
            links
                .iter()
                .find(|(t, target, _)| t == "uuid" && target == p)
                .map(|(_, _, l)| Value::from(l.clone()))
                .unwrap_or(Value::from(()))
        };
        let partitions = dict(parts.into_iter().map(|(pn, mut p)| {
            p.push(("links".into(), links_of(&pn)));
            p.push(("uuid".into(), uuid_of(&pn)));
            if !p.iter().any(|(k, _)| k == "holders") {
                p.push(("holders".into(), Value::from(Vec::<Value>::new())));
            }
            p.sort_by(|a, b| a.0.cmp(&b.0));
            (pn, dict(p))
        }));
        let mut d: Vec<(String, Value)> = vec![
            ("virtual".into(), Value::from(1)),
            ("links".into(), links_of(&name)),
            ("vendor".into(), opt("vendor")),
            ("model".into(), opt("model")),
            ("sas_address".into(), opt("sas_address")),
            ("sas_device_handle".into(), opt("sas_device_handle")),
            ("removable".into(), opt("removable")),
            (
                "support_discard".into(),
                if get("discard_max_hw_bytes").as_deref() == Some("0") {
                    Value::from("0")
                } else {
                    opt("discard_granularity")
                },
            ),
            ("partitions".into(), partitions),
            ("rotational".into(), opt("rotational")),
            ("scheduler_mode".into(), Value::from(scheduler)),
            ("sectorsize".into(), Value::from(sectorsize)),
            ("sectors".into(), Value::from(sectors)),
            (
                "size".into(),
                Value::from(bytes_to_human(sectors as f64 * ss as f64)),
            ),
            ("host".into(), Value::from("")),
            ("holders".into(), Value::from(holders)),
        ];
        if let Some(serial) = get("serial") {
            d.push(("serial".into(), Value::from(serial)));
        }
        d.sort_by(|a, b| a.0.cmp(&b.0));
        devs.push((name, dict(d)));
    }
    let mount_list: Vec<Value> = mounts.into_iter().map(|(_, m)| dict(m)).collect();
    (
        vec![
            ("mounts".into(), Value::from(mount_list)),
            ("devices".into(), dict(devs)),
            ("device_links".into(), all_links),
        ],
        warnings,
    )
}

/// Separates the `.fact` files [`local_facts_script`] prints.
const FACT_MARK: &str = "\u{1e}keel-fact\u{1e}";

/// Prints every `*.fact` file of `dir` (sorted, as the shell's glob is):
/// its name, then its text, or what it prints when executable.
fn local_facts_script(dir: &str) -> String {
    format!(
        "d={}
[ -d \"$d\" ] || exit 0
for f in \"$d\"/*.fact; do
         [ -e \"$f\" ] || continue
printf '%s%s\\n' '{FACT_MARK}' \"$f\"
         if [ -x \"$f\" ]; then \"$f\" 2>/dev/null; else cat -- \"$f\"; fi
done
",
        crate::shell::quote(dir)
    )
}

/// `ansible_local`: each file's JSON, else its INI sections, else
/// ansible-core's error text (with a warning), under the file's name
/// without `.fact`.
pub fn local_facts(out: &str) -> (Value, Vec<String>) {
    let mut local: Vec<(String, Value)> = Vec::new();
    let mut warnings = Vec::new();
    for record in out.split(FACT_MARK).skip(1) {
        let (path, body) = record.split_once('\n').unwrap_or((record, ""));
        let name = path
            .rsplit('/')
            .next()
            .unwrap_or(path)
            .trim_end_matches(".fact")
            .to_string();
        let value = if let Ok(j) = serde_json::from_str::<serde_json::Value>(body) {
            crate::template::value_from_json(&j)
        } else if let Some(ini) = crate::config::IniFile::parse(body)
            .ok()
            .filter(|i| !i.sections.is_empty())
        {
            dict(
                ini.sections
                    .iter()
                    .map(|(s, keys)| {
                        let keys: Vec<(String, Value)> = keys
                            .iter()
                            .map(|(k, (v, _))| (k.clone(), Value::from(v.clone())))
                            .collect();
                        (s.clone(), dict(keys))
                    })
                    .collect::<Vec<(String, Value)>>(),
            )
        } else {
            let msg = format!("error loading facts as JSON or ini - please check content: {path}");
            warnings.push(msg.clone());
            Value::from(msg)
        };
        local.push((name, value));
    }
    (dict(local), warnings)
}

/// `cpython` → `CPython`, as Python's `platform.python_implementation()`
/// spells it.
fn capitalise(name: &str) -> String {
    match name {
        "cpython" => "CPython".into(),
        "pypy" => "PyPy".into(),
        other => other.to_string(),
    }
}

fn s(v: &str) -> Value {
    Value::from(v.to_string())
}

/// Turns the script's output into fact values (pure, so it is unit-tested).
pub fn build_facts(main: &str, env: &str) -> VarMap {
    let mut kv: Vec<(&str, &str)> = Vec::new();
    let mut cpus: Vec<String> = Vec::new();
    let mut addrs: Vec<(String, String, String)> = Vec::new(); // iface, family, cidr
    let mut route4 = "";
    let mut route6 = "";
    let mut ifaces: Vec<Vec<String>> = Vec::new();
    for line in main.lines() {
        if let Some(r) = line.strip_prefix("CPU ") {
            cpus.push(r.to_string());
        } else if let Some(r) = line.strip_prefix("ADDR ") {
            // `2: eth0    inet 10.0.0.5/24 brd ... scope global eth0\ ...`
            let w: Vec<&str> = r.split_whitespace().collect();
            if w.len() >= 4 {
                addrs.push((
                    w[1].trim_end_matches(':').to_string(),
                    w[2].to_string(),
                    w[3].to_string(),
                ));
            }
        } else if let Some(r) = line.strip_prefix("ROUTE4 ") {
            route4 = r;
        } else if let Some(r) = line.strip_prefix("ROUTE6 ") {
            route6 = r;
        } else if let Some(r) = line.strip_prefix("IFACE ") {
            ifaces.push(r.split_whitespace().map(str::to_string).collect());
        } else if let Some((k, v)) = line.split_once('=') {
            kv.push((k, v));
        }
    }
    let get = |k: &str| {
        kv.iter()
            .rev()
            .find(|(kk, _)| *kk == k)
            .map(|(_, v)| *v)
            .unwrap_or("")
    };
    let num = |k: &str| get(k).trim().parse::<i64>().unwrap_or(0);
    let mut f = VarMap::new();

    let hostname = get("hostname");
    let fqdn = get("fqdn");
    f.insert("hostname".into(), s(hostname));
    f.insert("nodename".into(), s(get("nodename")));
    f.insert("fqdn".into(), s(fqdn));
    f.insert(
        "domain".into(),
        s(fqdn.split_once('.').map(|(_, d)| d).unwrap_or("")),
    );

    // Distribution, the way Ansible names it.
    let os_id = get("os_id");
    let (dist, family) = match os_id {
        "debian" => ("Debian", "Debian"),
        "ubuntu" => ("Ubuntu", "Debian"),
        "linuxmint" => ("Linux Mint", "Debian"),
        "centos" => ("CentOS", "RedHat"),
        "rhel" => ("RedHat", "RedHat"),
        "rocky" => ("Rocky", "RedHat"),
        "almalinux" => ("AlmaLinux", "RedHat"),
        "fedora" => ("Fedora", "RedHat"),
        "alpine" => ("Alpine", "Alpine"),
        "arch" => ("Archlinux", "Archlinux"),
        "opensuse-leap" | "opensuse-tumbleweed" | "sles" => ("openSUSE Leap", "Suse"),
        "" => ("", ""),
        _ => ("", ""),
    };
    let dist = if dist.is_empty() {
        get("os_name")
    } else {
        dist
    };
    let family = if family.is_empty() {
        if get("os_like").contains("debian") {
            "Debian"
        } else if get("os_like").contains("rhel") || get("os_like").contains("fedora") {
            "RedHat"
        } else {
            dist
        }
    } else {
        family
    };
    let mut version = get("os_version_id").to_string();
    if os_id == "debian"
        && !get("debian_version").is_empty()
        && get("debian_version")
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    {
        version = get("debian_version").to_string();
    }
    let major = version.split('.').next().unwrap_or("").to_string();
    f.insert("distribution".into(), s(dist));
    f.insert("os_family".into(), s(family));
    f.insert("distribution_version".into(), s(&version));
    f.insert("distribution_major_version".into(), s(&major));
    f.insert("distribution_release".into(), s(get("os_codename")));
    f.insert(
        "lsb".into(),
        dict([
            ("id", s(dist)),
            ("codename", s(get("os_codename"))),
            ("release", s(&version)),
            ("major_release", s(&major)),
            ("description", s(get("os_pretty"))),
        ]),
    );

    let machine = get("machine");
    f.insert("architecture".into(), s(machine));
    f.insert("machine".into(), s(machine));
    f.insert("kernel".into(), s(get("kernel")));
    f.insert("kernel_version".into(), s(get("kernel_version")));
    f.insert("system".into(), s(get("system")));

    let mb = |k: &str| num(k) / 1024;
    f.insert("memtotal_mb".into(), mb("memtotal_kb").into());
    f.insert("memfree_mb".into(), mb("memfree_kb").into());
    f.insert("swaptotal_mb".into(), mb("swaptotal_kb").into());
    f.insert("swapfree_mb".into(), mb("swapfree_kb").into());
    f.insert(
        "memory_mb".into(),
        dict([
            (
                "real",
                dict([
                    ("total", mb("memtotal_kb").into()),
                    ("free", mb("memfree_kb").into()),
                    ("used", (mb("memtotal_kb") - mb("memfree_kb")).into()),
                ]),
            ),
            (
                "nocache",
                dict([
                    (
                        "free",
                        (mb("memfree_kb") + mb("buffers_kb") + mb("cached_kb")).into(),
                    ),
                    (
                        "used",
                        (mb("memtotal_kb") - mb("memfree_kb") - mb("buffers_kb") - mb("cached_kb"))
                            .into(),
                    ),
                ]),
            ),
            (
                "swap",
                dict([
                    ("total", mb("swaptotal_kb").into()),
                    ("free", mb("swapfree_kb").into()),
                    ("used", (mb("swaptotal_kb") - mb("swapfree_kb")).into()),
                ]),
            ),
        ]),
    );

    let vcpus = num("vcpus").max(1);
    let sockets = num("sockets").max(1);
    let cores = if num("cores") > 0 {
        num("cores")
    } else {
        vcpus / sockets
    };
    let threads = if num("siblings") > 0 && cores > 0 {
        num("siblings") / cores
    } else {
        1
    };
    f.insert("processor_vcpus".into(), vcpus.into());
    f.insert("processor_count".into(), sockets.into());
    f.insert("processor_cores".into(), cores.into());
    f.insert("processor_threads_per_core".into(), threads.max(1).into());
    f.insert("processor_nproc".into(), vcpus.into());
    let mut plist = Vec::new();
    for (i, m) in cpus.iter().enumerate() {
        plist.push(Value::from(i.to_string()));
        plist.push(Value::from(m.clone()));
    }
    f.insert("processor".into(), Value::from(plist));

    f.insert("service_mgr".into(), s(get("service_mgr")));
    let pkg = match get("pkg_mgr") {
        "apt-get" => "apt",
        "" => "unknown",
        other => other,
    };
    f.insert("pkg_mgr".into(), s(pkg));

    f.insert("user_id".into(), s(get("user_id")));
    f.insert("user_uid".into(), num("user_uid").into());
    f.insert("user_gid".into(), num("user_gid").into());
    f.insert("user_gecos".into(), s(get("user_gecos")));
    f.insert("user_dir".into(), s(get("user_dir")));
    f.insert("user_shell".into(), s(get("user_shell")));

    let d: Vec<&str> = get("date").split('|').collect();
    let u: Vec<&str> = get("date_utc").split('|').collect();
    if d.len() >= 17 && u.len() >= 2 {
        let micro = d[16].get(..6).unwrap_or("000000");
        f.insert(
            "date_time".into(),
            dict([
                ("year", s(d[0])),
                ("month", s(d[1])),
                ("day", s(d[2])),
                ("hour", s(d[3])),
                ("minute", s(d[4])),
                ("second", s(d[5])),
                ("epoch", s(d[6])),
                ("epoch_int", s(d[6])),
                ("date", s(&format!("{}-{}-{}", d[0], d[1], d[2]))),
                ("time", s(&format!("{}:{}:{}", d[3], d[4], d[5]))),
                ("iso8601", s(u[0])),
                (
                    "iso8601_basic",
                    s(&format!(
                        "{}{}{}T{}{}{}{}",
                        d[0], d[1], d[2], d[3], d[4], d[5], micro
                    )),
                ),
                (
                    "iso8601_basic_short",
                    s(&format!(
                        "{}{}{}T{}{}{}",
                        d[0], d[1], d[2], d[3], d[4], d[5]
                    )),
                ),
                ("iso8601_micro", s(&format!("{}.{}Z", u[1], micro))),
                ("tz", s(d[7])),
                ("tz_offset", s(d[8])),
                ("weekday", s(d[9])),
                ("weekday_number", s(d[10])),
                ("day_of_year", s(d[11])),
                ("weeknumber", s(d[12])),
                ("monthname", s(d[14])),
            ]),
        );
    }
    if let Ok(up) = get("uptime").parse::<f64>() {
        f.insert("uptime_seconds".into(), (up as i64).into());
    }
    let virt = get("virt");
    let (vtype, vrole) = match virt {
        "" | "none" => ("", ""),
        v => (v, "guest"),
    };
    f.insert("virtualization_type".into(), s(vtype));
    f.insert("virtualization_role".into(), s(vrole));
    f.insert(
        "selinux".into(),
        dict([(
            "status",
            s(if get("selinux") == "1" {
                "enabled"
            } else {
                "disabled"
            }),
        )]),
    );
    // The host's Python, as Ansible reports the interpreter that ran the
    // module (Keel runs none; this is the first `python3` on PATH).
    let py: Vec<&str> = get("python").split('|').collect();
    if let [exe, major, minor, micro, level, serial, implementation] = py[..] {
        let num = |x: &str| Value::from(x.parse::<i64>().unwrap_or(0));
        f.insert(
            "python".into(),
            dict([
                ("executable", s(exe)),
                ("has_sslcontext", Value::from(true)),
                ("type", s(&capitalise(implementation))),
                (
                    "version",
                    dict([
                        ("major", num(major)),
                        ("minor", num(minor)),
                        ("micro", num(micro)),
                        ("releaselevel", s(level)),
                        ("serial", num(serial)),
                    ]),
                ),
                (
                    "version_info",
                    Value::from(vec![
                        num(major),
                        num(minor),
                        num(micro),
                        s(level),
                        num(serial),
                    ]),
                ),
            ]),
        );
        f.insert(
            "python_version".into(),
            s(&format!("{major}.{minor}.{micro}")),
        );
    } else {
        f.insert("python".into(), Value::from(()));
    }

    // Networking.
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (iface, fam, cidr) in &addrs {
        let ip = cidr.split('/').next().unwrap_or("");
        if fam == "inet" && !ip.starts_with("127.") {
            v4.push(Value::from(ip.to_string()));
        }
        if fam == "inet6" && ip != "::1" && !ip.starts_with("fe80") {
            v6.push(Value::from(ip.to_string()));
        }
        let _ = iface;
    }
    f.insert("all_ipv4_addresses".into(), Value::from(v4));
    f.insert("all_ipv6_addresses".into(), Value::from(v6));
    let mut names = Vec::new();
    for i in &ifaces {
        let Some(name) = i.first() else { continue };
        names.push(Value::from(name.clone()));
        let mut entry: Vec<(&str, Value)> = vec![
            ("device", s(name)),
            ("macaddress", s(i.get(1).map(String::as_str).unwrap_or(""))),
            (
                "mtu",
                i.get(2)
                    .and_then(|m| m.parse::<i64>().ok())
                    .unwrap_or(0)
                    .into(),
            ),
            (
                "active",
                (i.get(3).map(String::as_str) != Some("down")).into(),
            ),
            (
                "type",
                s(if i.get(4).map(String::as_str) == Some("772") {
                    "loopback"
                } else {
                    "ether"
                }),
            ),
        ];
        if let Some((_, _, cidr)) = addrs.iter().find(|(n, fam, _)| n == name && fam == "inet") {
            entry.push(("ipv4", ipv4_entry(cidr)));
        }
        let six: Vec<Value> = addrs
            .iter()
            .filter(|(n, fam, _)| n == name && fam == "inet6")
            .map(|(_, _, c)| {
                let (a, p) = c.split_once('/').unwrap_or((c, "128"));
                dict([("address", s(a)), ("prefix", s(p))])
            })
            .collect();
        if !six.is_empty() {
            entry.push(("ipv6", Value::from(six)));
        }
        f.insert(name.replace(['-', ':', '.'], "_"), dict(entry));
    }
    f.insert("interfaces".into(), Value::from(names));
    f.insert(
        "default_ipv4".into(),
        default_route(route4, &addrs, &ifaces, "inet"),
    );
    f.insert(
        "default_ipv6".into(),
        default_route(route6, &addrs, &ifaces, "inet6"),
    );

    let env_pairs: Vec<(String, Value)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()))
        .map(|(k, v)| (k.to_string(), s(v)))
        .collect();
    f.insert("env".into(), dict(env_pairs));
    f
}

fn prefix_to_mask(p: u32) -> String {
    let m: u32 = if p == 0 {
        0
    } else {
        u32::MAX << (32 - p.min(32))
    };
    format!(
        "{}.{}.{}.{}",
        m >> 24,
        (m >> 16) & 255,
        (m >> 8) & 255,
        m & 255
    )
}

fn ipv4_entry(cidr: &str) -> Value {
    let (a, p) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let p: u32 = p.parse().unwrap_or(32);
    let ip: Vec<u32> = a.split('.').filter_map(|o| o.parse().ok()).collect();
    let ipn = if ip.len() == 4 {
        ip[0] << 24 | ip[1] << 16 | ip[2] << 8 | ip[3]
    } else {
        0
    };
    let m: u32 = if p == 0 {
        0
    } else {
        u32::MAX << (32 - p.min(32))
    };
    let net = ipn & m;
    let network = format!(
        "{}.{}.{}.{}",
        net >> 24,
        (net >> 16) & 255,
        (net >> 8) & 255,
        net & 255
    );
    let bc = net | !m;
    let broadcast = format!(
        "{}.{}.{}.{}",
        bc >> 24,
        (bc >> 16) & 255,
        (bc >> 8) & 255,
        bc & 255
    );
    dict([
        ("address", s(a)),
        ("netmask", s(&prefix_to_mask(p))),
        ("network", s(&network)),
        ("broadcast", s(&broadcast)),
        ("prefix", s(&p.to_string())),
    ])
}

/// `default_ipv4`/`default_ipv6` from `ip -o route get` output.
fn default_route(
    route: &str,
    addrs: &[(String, String, String)],
    ifaces: &[Vec<String>],
    fam: &str,
) -> Value {
    let w: Vec<&str> = route.split_whitespace().collect();
    let after = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .map(|s| s.to_string())
    };
    let Some(dev) = after("dev") else {
        return dict(Vec::<(String, Value)>::new());
    };
    let src = after("src").unwrap_or_default();
    let gw = after("via").unwrap_or_default();
    let iface = ifaces.iter().find(|i| i.first() == Some(&dev));
    let mut entry: Vec<(String, Value)> = vec![
        ("address".into(), s(&src)),
        ("interface".into(), s(&dev)),
        ("alias".into(), s(&dev)),
        ("gateway".into(), s(&gw)),
        (
            "macaddress".into(),
            s(iface
                .and_then(|i| i.get(1))
                .map(String::as_str)
                .unwrap_or("")),
        ),
        (
            "mtu".into(),
            iface
                .and_then(|i| i.get(2))
                .and_then(|m| m.parse::<i64>().ok())
                .unwrap_or(0)
                .into(),
        ),
        ("type".into(), s("ether")),
    ];
    if let Some((_, _, cidr)) = addrs
        .iter()
        .find(|(n, f, c)| *n == dev && f == fam && c.split('/').next() == Some(src.as_str()))
    {
        if fam == "inet" {
            let e = ipv4_entry(cidr);
            for k in ["netmask", "network", "broadcast", "prefix"] {
                if let Ok(v) = e.get_attr(k) {
                    entry.push((k.into(), v));
                }
            }
        } else if let Some((_, p)) = cidr.split_once('/') {
            entry.push(("prefix".into(), s(p)));
        }
    }
    dict(entry)
}

#[cfg(test)]
mod tests {
    use super::build_facts;

    #[test]
    fn facts_from_sample_output() {
        let main = "hostname=web1\nfqdn=web1.example.org\nos_id=debian\nos_codename=bookworm\nos_version_id=12\ndebian_version=12.5\nmachine=x86_64\nmemtotal_kb=2048000\nvcpus=4\nsockets=1\ncores=2\nsiblings=4\n\
ADDR 2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever\n\
ROUTE4 1.1.1.1 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0\n\
IFACE eth0 52:54:00:12:34:56 1500 up 1\n\
date=2024|05|06|07|08|09|1714979289|UTC|+0000|Monday|1|127|19|May|May|24|123456789\ndate_utc=2024-05-06T07:08:09Z|2024-05-06T07:08:09\n";
        let f = build_facts(main, "HOME=/root\nPATH=/bin\n");
        assert_eq!(f["distribution"].as_str(), Some("Debian"));
        assert_eq!(f["os_family"].as_str(), Some("Debian"));
        assert_eq!(f["distribution_version"].as_str(), Some("12.5"));
        assert_eq!(f["distribution_major_version"].as_str(), Some("12"));
        assert_eq!(f["domain"].as_str(), Some("example.org"));
        assert_eq!(f["memtotal_mb"].as_i64(), Some(2000));
        assert_eq!(f["processor_threads_per_core"].as_i64(), Some(2));
        let d4 = &f["default_ipv4"];
        assert_eq!(d4.get_attr("address").unwrap().as_str(), Some("10.0.0.5"));
        assert_eq!(d4.get_attr("gateway").unwrap().as_str(), Some("10.0.0.1"));
        assert_eq!(
            d4.get_attr("netmask").unwrap().as_str(),
            Some("255.255.255.0")
        );
        assert_eq!(f["env"].get_attr("HOME").unwrap().as_str(), Some("/root"));
        assert_eq!(
            f["date_time"].get_attr("date").unwrap().as_str(),
            Some("2024-05-06")
        );
    }
}
