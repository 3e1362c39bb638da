#!/usr/bin/env bash
# Builds the end-to-end test machines from Debian packages only: a raw disk
# with two root slots A/B, a state partition and the bootloader's boot
# variables, plus signed releases 2-4 as offline bundles made with the real
# rampart CLI. x86_64 boots with BIOS GRUB (grubenv on the boot partition);
# arm64 with U-Boot (qemu_arm64 from u-boot-qemu, a boot.scr, the boot
# variables in a U-Boot environment on the disk that Linux edits with
# libubootenv). No loop devices, no mounts, no root needed: partitions are
# made with mkfs.ext4 -d into files and put together with sfdisk and dd.
#
# Usage: test/e2e/build.sh [x86_64|arm64]
#
# Prints the directory of the built machine on its last line. Machines are
# cached under ${RAMPART_E2E_CACHE:-~/.cache/rampart-e2e}, keyed by a hash of
# every input (this script, the grub.cfg in docs/agent.md, the agent and
# rampart binaries, the Debian package versions, the month: the bundles'
# metadata expires after 62 days), and rebuilt when one changes; the kernel
# and the initramfs are cached apart, keyed by the kernel package, so that a
# change to the agent does not unpack the kernel again.
set -eu

arch=${1:-x86_64}
case $arch in
x86_64) goarch=amd64 debarch=amd64 loader=grub ;;
arm64) goarch=arm64 debarch=arm64 loader=uboot ;;
*)
	echo "build.sh: unknown architecture $arch (x86_64 or arm64)" >&2
	exit 2
	;;
esac
# The U-Boot environment with the boot variables: bytes on the disk before
# the first partition (docs/agent.md's boot.cmd reads sector 0x400).
uboot_env_offset=$((0x80000)) uboot_env_size=$((0x4000))

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${RAMPART_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rampart-e2e}
mkdir -p "$cache/debs" "$cache/tmp"
export RAMPART_PASSPHRASE=rampart-e2e

log() { echo "build.sh: $*" >&2; }

# --- inputs ---------------------------------------------------------------

tmp=$(mktemp -d "$cache/tmp/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The agent for the guest (static) and the CLI for the host.
(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$tmp/rampart-agent" ./cmd/rampart-agent)
(cd "$repo" && go build -trimpath -buildvcs=false -o "$tmp/rampart" ./cmd/rampart)

# The boot configuration operators are given, read from the docs so that
# they are tested: grub.cfg or U-Boot's boot.cmd.
docfile() { # docfile NAME: the fenced block after <!-- file: NAME
	awk -v name="$1" 'index($0, "<!-- file: " name " ") == 1 {found=1; next}
	     found && /^```/ { if (inblock) exit; inblock=1; next }
	     inblock { print }' "$repo/docs/agent.md"
}
if [ "$loader" = grub ]; then
	bootcfg=grub.cfg check='save_env A_TRY B_TRY'
else
	bootcfg=boot.cmd check='env export -c'
fi
docfile "$bootcfg" >"$tmp/$bootcfg"
if ! grep -q "$check" "$tmp/$bootcfg"; then
	log "docs/agent.md has no complete $bootcfg after <!-- file: $bootcfg"
	exit 1
fi

# Debian's kernel, from the package the linux-image-$debarch metapackage
# names, downloaded once (apt-get download) and unpacked without installing.
kpkg=$(apt-cache depends "linux-image-$debarch:$debarch" | awk '/Depends: linux-image-[0-9]/ {sub(/:.*/, "", $2); print $2; exit}')
if [ -z "$kpkg" ]; then
	log "apt-cache knows no linux-image-$debarch; run apt-get update"
	exit 1
fi
kver=$(apt-cache policy "$kpkg:$debarch" | awk '/Candidate:/ {print $2}')
kdeb=$(find "$cache/debs" -maxdepth 1 -name "${kpkg}_*_${debarch}.deb" | head -n 1)
if [ -z "$kdeb" ]; then
	log "downloading $kpkg $kver"
	# apt-get warns that root downloads unsandboxed; the check below tells.
	if ! (cd "$cache/debs" && apt-get download "$kpkg:$debarch" >"$tmp/apt.log" 2>&1); then
		cat "$tmp/apt.log" >&2
	fi
	kdeb=$(find "$cache/debs" -maxdepth 1 -name "${kpkg}_*_${debarch}.deb" | head -n 1)
	[ -n "$kdeb" ] || {
		log "apt-get download $kpkg failed"
		exit 1
	}
fi

pkgver() { dpkg-query -W -f '${Version}' "$1"; }
if ! pkgver busybox-static >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
	log "busybox-static is not installed (scripts/e2e-deps.sh installs it)"
	exit 1
fi
# The guest's busybox: the host's, or for another architecture Debian's
# busybox-static of the same version for it (apt-get download).
if [ "$debarch" = "$(dpkg --print-architecture)" ]; then
	busybox=/bin/busybox
	bbver=$(pkgver busybox-static)
else
	bbver=$(apt-cache policy "busybox-static:$debarch" | awk '/Candidate:/ {print $2}')
	bbdeb=$(find "$cache/debs" -maxdepth 1 -name "busybox-static_*_${debarch}.deb" | head -n 1)
	if [ -z "$bbdeb" ]; then
		if ! (cd "$cache/debs" && apt-get download "busybox-static:$debarch" >"$tmp/apt.log" 2>&1); then
			cat "$tmp/apt.log" >&2
		fi
		bbdeb=$(find "$cache/debs" -maxdepth 1 -name "busybox-static_*_${debarch}.deb" | head -n 1)
		[ -n "$bbdeb" ] || {
			log "apt-get download busybox-static:$debarch failed (dpkg --add-architecture $debarch; apt-get update)"
			exit 1
		}
	fi
	dpkg-deb -x "$bbdeb" "$tmp/busybox-$debarch"
	busybox=$tmp/busybox-$debarch/bin/busybox
fi

key=$({
	cat "$0"
	cat "$tmp/$bootcfg"
	sha256sum "$tmp/rampart-agent" "$tmp/rampart" | cut -d' ' -f1
	basename "$kdeb"
	echo "busybox $bbver"
	for p in grub-pc-bin grub-common u-boot-qemu u-boot-tools e2fsprogs fdisk cpio; do echo "$p $(pkgver $p 2>/dev/null || true)"; done
	date -u +%Y-%m
} | sha256sum | cut -c1-16)
out=$cache/$arch-$key
# One build of a machine at a time: two test runs building the same key
# would otherwise swap each other's disk and manifest.
exec 9>"$cache/$arch.lock"
flock 9
if [ -f "$out/manifest" ]; then
	echo "$out"
	exit 0
fi
log "building $out"
work=$tmp/work
mkdir -p "$work"

# --- kernel, modules, initramfs --------------------------------------------

# Cached apart from the machine (keyed by this section, the kernel package
# and busybox), so that a change to the agent does not unpack the kernel
# again: boot/vmlinuz (gzipped for U-Boot) and boot/initrd.img.
kkey=$({
	sed -n '/^# --- kernel, modules, initramfs/,/^# --- root file systems/p' "$0"
	basename "$kdeb"
	echo "busybox $bbver $loader"
} | sha256sum | cut -c1-16)
kcache=$cache/kernel-$arch-$kkey
if [ ! -f "$kcache/initrd.img" ]; then
	dpkg-deb -x "$kdeb" "$work/kernel"
	vmlinuz=$(find "$work/kernel/boot" -name 'vmlinuz-*' | head -n 1)
	moddir=$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)

	# The modules the initramfs needs to mount an ext4 slot from a virtio disk,
	# each after the modules it depends on (read from its .modinfo section).
	mods=""
	addmod() {
		local path dep
		path=$(find "$moddir/kernel" -name "$1.ko" -o -name "$1.ko.xz" | head -n 1)
		[ -n "$path" ] || return 0 # built in
		case " $mods " in *" $path "*) return 0 ;; esac
		for dep in $(tr '\0' '\n' <"$path" | sed -n 's/^depends=//p' | tr ',' ' '); do
			addmod "$dep"
		done
		mods="$mods $path"
	}
	for m in virtio_pci virtio_blk crc32c_generic ext4; do addmod "$m"; done

	initrd=$work/initrd
	mkdir -p "$initrd/bin" "$initrd/lib/modules" "$initrd/proc" "$initrd/sys" "$initrd/dev" "$initrd/newroot"
	cp "$busybox" "$initrd/bin/busybox"
	: >"$initrd/modules"
	for path in $mods; do
		name=$(basename "$path")
		case $name in
		*.xz)
			xz -dc "$path" >"$initrd/lib/modules/${name%.xz}"
			name=${name%.xz}
			;;
		*) cp "$path" "$initrd/lib/modules/$name" ;;
		esac
		echo "$name" >>"$initrd/modules"
	done
	cat >"$initrd/init" <<'EOF'
#!/bin/busybox sh
# Mounts the slot named by root= read-only and starts its /sbin/init.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do insmod "/lib/modules/$m"; done
root=$(sed -n 's/.* root=\([^ ]*\).*/\1/p' /proc/cmdline)
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 -o ro,noload "$root" /newroot; then
	echo "initramfs: cannot mount $root"
	exec sh
fi
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/init
EOF
	chmod 755 "$initrd/init"
	(cd "$initrd" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$work/initrd.img"
	mkdir -p "$kcache.new"
	if [ "$loader" = uboot ]; then
		# booti unpacks a gzipped Image (kernel_comp_addr_r in boot.cmd).
		gzip -9 -n -c "$vmlinuz" >"$kcache.new/vmlinuz"
	else
		cp "$vmlinuz" "$kcache.new/vmlinuz"
	fi
	mv "$work/initrd.img" "$kcache.new/initrd.img"
	rm -rf "$kcache" "$work/kernel" "$initrd"
	mv "$kcache.new" "$kcache"
fi

# --- root file systems: one per release -------------------------------------

logkey='rampart-e2e.invalid/log+f6b696b8+AU4Ca0eCaHTsZG/pwEqsoGLmc+18ILO4SUCco2cTFUxj'
hw=rampart-e2e-$arch

if [ "$loader" = grub ]; then
	bootloader_toml='[bootloader]
backend = "grub"
env = "/boot/grub/grubenv"'
else
	bootloader_toml='[bootloader]
backend = "uboot"
fw_env_config = "/etc/fw_env.config"
max_attempts = 3'
fi

# rootfs VERSION HEALTH-EXIT INIT-KIND: INIT-KIND is "ok" or "exits".
rootfs() {
	local version=$1 health=$2 initkind=$3 dir=$work/rootfs-$1
	mkdir -p "$dir/bin" "$dir/sbin" "$dir/usr/bin" "$dir/etc/rampart" "$dir/boot" "$dir/proc" "$dir/sys" \
		"$dir/dev" "$dir/tmp" "$dir/run" "$dir/data" "$dir/mnt/bundle"
	cp "$busybox" "$dir/bin/busybox"
	# The slot is mounted read-only: the applet links are made here (the
	# host's busybox lists the same applets).
	for app in $(/bin/busybox --list); do
		[ "$app" = busybox ] || ln -sf busybox "$dir/bin/$app"
	done
	cp "$tmp/rampart-agent" "$dir/usr/bin/rampart-agent"
	cp "$kcache/vmlinuz" "$dir/boot/vmlinuz"
	cp "$kcache/initrd.img" "$dir/boot/initrd.img"
	if [ "$loader" = uboot ]; then
		mkdir -p "$dir/var"
		ln -sf /run "$dir/var/lock" # fw_printenv's lock file
	fi
	echo "$version" >"$dir/etc/rampart-release"
	cp "$work/repo/public/1.root.json" "$dir/etc/rampart/image-root.json"
	echo "$logkey" >"$dir/etc/rampart/log.pub"
	printf '/dev/vda %#x %#x\n' "$uboot_env_offset" "$uboot_env_size" >"$dir/etc/fw_env.config"
	cat >"$dir/etc/rampart/agent.toml" <<EOF
# The e2e test machine: slots are partitions 2 and 3 of the virtio disk.
[device]
id = "e2e-$arch"
hardware_id = "$hw"
key = "/data/device.key"
certificate = "/data/device.crt"

[trust]
image_root = "/etc/rampart/image-root.json"
director_root = "/etc/rampart/image-root.json"
log_key = "/etc/rampart/log.pub"

[slots]
a = "/dev/vda2"
b = "/dev/vda3"

$bootloader_toml

[health]
command = ["/usr/bin/health"]
timeout = "60s"

[reboot]
command = ["/bin/busybox", "reboot", "-f"]

[state]
dir = "/data/rampart"

[offline]
require_log = false
EOF
	cat >"$dir/usr/bin/health" <<EOF
#!/bin/sh
echo "RAMPART-E2E: health $version exit $health" >/dev/console
sleep 0.5
exit $health
EOF
	chmod 755 "$dir/usr/bin/health"
	if [ "$initkind" = exits ]; then
		cat >"$dir/sbin/init" <<'EOF'
#!/bin/sh
echo "RAMPART-E2E: init of this release exits"
exit 1
EOF
	else
		cat >"$dir/sbin/init" <<'EOF'
#!/bin/sh
# The test machine's init: boot (health check, commit or roll back), then
# install the bundle on the second disk once per test run, then power off.
export PATH=/bin:/sbin:/usr/bin
say() { echo "RAMPART-E2E: $*"; }
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t ext4 /dev/vda1 /boot
mount -t ext4 /dev/vda4 /data
mkdir -p /data/rampart
# Write dirty pages back within half a second, as memory pressure on a
# small device would, so that a power cut while the agent writes a slot
# finds it partly written (unsynced pages are lost with the power).
echo 50 >/proc/sys/vm/dirty_expire_centisecs
echo 25 >/proc/sys/vm/dirty_writeback_centisecs
slot=$(sed -n 's/.*rauc\.slot=\([AB]\).*/\1/p' /proc/cmdline)
say "booted slot=$slot release=$(cat /etc/rampart-release) uptime=$(cut -d' ' -f1 /proc/uptime)"
rampart-agent boot --config /etc/rampart/agent.toml
say "agent-boot exit=$?"
if mount -t ext4 -o ro /dev/vdb /mnt/bundle 2>/dev/null; then
	run=$(cat /mnt/bundle/run-id)
	if [ "$run" != "$(cat /data/e2e-run-id 2>/dev/null)" ]; then
		echo "$run" >/data/e2e-run-id
		sync
		say "install start"
		rampart-agent install --config /etc/rampart/agent.toml /mnt/bundle/bundle.rbundle
		say "agent-install exit=$?"
	fi
	umount /mnt/bundle
fi
rampart-agent status --config /etc/rampart/agent.toml
say "poweroff"
umount /data
umount /boot
sync
poweroff -f
EOF
	fi
	chmod 755 "$dir/sbin/init"
	# The release image is the file system; 40 MiB holds kernel, initramfs,
	# busybox and the agent.
	mkfs.ext4 -q -F -L "release-$version" -E root_owner=0:0 -d "$dir" "$work/release-$version.img" 40M
}

# --- the signing side: keys, repository, releases, bundles ----------------

rp() { "$tmp/rampart" "$@" >/dev/null; }
(
	cd "$work"
	for k in root targets online rel; do rp key generate "keys/$k"; done
	rp repo init repo --root-key keys/root.pub --root-threshold 1 --targets-key keys/targets.pub \
		--online-key keys/online.pub --expiry timestamp=62d --expiry snapshot=62d
	rp repo sign repo root --key keys/root.key --yes
	rp repo delegate repo e2e --key keys/rel.pub --threshold 1
	rp repo sign repo targets --key keys/targets.key --yes
	rp repo sign repo e2e --key keys/rel.key --yes
	rp repo publish repo --key keys/online.key
)
rootfs 1.0.0 0 ok
rootfs 2.0.0 0 ok
rootfs 3.0.0 1 ok
rootfs 4.0.0 0 exits
(
	cd "$work"
	for v in 2.0.0 3.0.0 4.0.0; do
		rp release add repo "release-$v.img" --product e2e --version "$v" --security-version 1 --hardware "$hw"
	done
	rp repo sign repo e2e --key keys/rel.key --yes
	rp repo publish repo --key keys/online.key
	for v in 2.0.0 3.0.0 4.0.0; do
		rp bundle repo "e2e/$v" -o "bundle-$v.rbundle"
		"$tmp/rampart" verify "bundle-$v.rbundle" --root repo/public/1.root.json --hardware "$hw" >/dev/null
	done
)

# --- the disk ---------------------------------------------------------------

mib=$((1024 * 1024))
boot_mib=16 slot_mib=64 state_mib=32
mkdir -p "$work/bootfs"
if [ "$loader" = grub ]; then
	# The boot partition: grub.cfg, the factory grubenv, GRUB's modules.
	mkdir -p "$work/bootfs/grub/i386-pc"
	cp "$tmp/grub.cfg" "$work/bootfs/grub/grub.cfg"
	cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$work/bootfs/grub/i386-pc/"
	"$tmp/rampart-agent" provision --backend grub --env-out "$work/bootfs/grub/grubenv" >&2
else
	# The boot partition: boot.scr, found by U-Boot's distro boot.
	mkimage -A arm64 -O linux -T script -C none -n "rampart A/B" -d "$tmp/boot.cmd" "$work/bootfs/boot.scr" >/dev/null
	# The factory boot variables, for the gap before the first partition
	# (the agent built for the guest cannot run here: the host's writes
	# them, built as the x86_64 machine builds its guest's, so that the Go
	# build cache serves both).
	(cd "$repo" && CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$tmp/rampart-agent-host" ./cmd/rampart-agent)
	"$tmp/rampart-agent-host" provision --backend uboot --env-out "$work/uboot-env.bin" \
		--env-size "$uboot_env_size" --max-attempts 3 >&2
fi
mkfs.ext4 -q -F -L boot -E root_owner=0:0 -d "$work/bootfs" "$work/boot.img" "${boot_mib}M"
mkdir -p "$work/statefs"
mkfs.ext4 -q -F -L state -E root_owner=0:0 -d "$work/statefs" "$work/state.img" "${state_mib}M"

disk=$work/disk.img
total=$((1 + boot_mib + 2 * slot_mib + state_mib))
truncate -s "${total}M" "$disk"
sfdisk --quiet "$disk" <<EOF
label: dos
label-id: 0x52414d50
start=1MiB, size=${boot_mib}MiB, type=83, bootable
size=${slot_mib}MiB, type=83
size=${slot_mib}MiB, type=83
size=${state_mib}MiB, type=83
EOF
put() { dd if="$1" of="$disk" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$work/boot.img" 1
put "$work/release-1.0.0.img" $((1 + boot_mib))
put "$work/state.img" $((1 + boot_mib + 2 * slot_mib))

if [ "$loader" = grub ]; then
	# BIOS GRUB: boot.img's code in the MBR (its first 440 bytes, before
	# the disk signature and partition table), the core image in the gap
	# after it. boot.img loads sector 1; the core image's first sector
	# loads the rest from sector 2 on, which is where it is.
	grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/grub' \
		biosdisk part_msdos ext2 normal configfile loadenv test echo linux serial terminal reboot sleep
	core_sectors=$((($(stat -c %s "$work/core.img") + 511) / 512))
	if [ "$core_sectors" -ge 2047 ]; then
		log "the core image ($core_sectors sectors) does not fit before the first partition"
		exit 1
	fi
	dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
	dd if="$work/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
else
	# The factory boot variables in the gap before the first partition.
	dd if="$work/uboot-env.bin" of="$disk" bs=512 seek=$((uboot_env_offset / 512)) conv=notrunc status=none
fi

# --- the result -------------------------------------------------------------

mkdir -p "$out.new"
mv "$disk" "$out.new/disk.img"
for v in 2.0.0 3.0.0 4.0.0; do mv "$work/bundle-$v.rbundle" "$out.new/"; done
for v in 1.0.0 2.0.0 3.0.0 4.0.0; do
	sha=$(sha256sum "$work/release-$v.img" | cut -d' ' -f1)
	echo "release $v $(stat -c %s "$work/release-$v.img") $sha"
done >"$out.new/manifest.tmp"
{
	echo "arch $arch"
	echo "disk disk.img $mib $boot_mib $slot_mib $state_mib"
	if [ "$loader" = grub ]; then
		echo "bootloader grub-pc-bin $(pkgver grub-pc-bin)"
	else
		echo "bootloader u-boot-qemu $(pkgver u-boot-qemu), u-boot-tools $(pkgver u-boot-tools), libubootenv-tool $(pkgver libubootenv-tool)"
		echo "ubootenv $uboot_env_offset $uboot_env_size"
	fi
	echo "kernel $kpkg $kver"
	echo "package busybox-static:$debarch $bbver"
	echo "package e2fsprogs $(pkgver e2fsprogs)"
	cat "$out.new/manifest.tmp"
} >"$out.new/manifest"
rm "$out.new/manifest.tmp"
cp "$tmp/$bootcfg" "$out.new/$bootcfg"
rm -rf "$out"
mv "$out.new" "$out"
log "built $out"
echo "$out"
