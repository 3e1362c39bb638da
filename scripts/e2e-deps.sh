#!/usr/bin/env bash
# Installs what the end-to-end boot tests (make e2e, test/e2e) need when it
# is missing: QEMU, BIOS GRUB, U-Boot for QEMU and its tools, e2fsprogs,
# busybox, sfdisk, cpio. Debian's kernels are not installed: test/e2e/build.sh
# fetches them (and arm64's busybox-static) with apt-get download and unpacks
# them, so apt must know the arm64 packages: this adds the architecture
# (dpkg --add-architecture arm64) and updates the package lists when they lack
# the kernels. Idempotent and quiet when everything is present.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

need=()
check() { # check PACKAGE PATH-OR-COMMAND
	if [[ "$2" == /* ]]; then [[ -e "$2" ]] || need+=("$1"); else command -v "$2" >/dev/null || need+=("$1"); fi
}
check qemu-system-x86 qemu-system-x86_64
check qemu-system-arm qemu-system-aarch64
check grub-pc-bin /usr/lib/grub/i386-pc/boot.img
check grub-common grub-mkimage
check u-boot-qemu /usr/lib/u-boot/qemu_arm64/u-boot.bin
check u-boot-tools mkimage
check libubootenv-tool fw_setenv
check e2fsprogs mkfs.ext4
check busybox-static /bin/busybox
check fdisk sfdisk
check cpio cpio
check xz-utils xz

native=$(dpkg --print-architecture)
updated=0
for arch in amd64 arm64; do
	if [[ $arch != "$native" ]] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
		echo "e2e-deps: dpkg --add-architecture $arch" >&2
		"${sudo_cmd[@]}" dpkg --add-architecture "$arch"
		updated=1 # its package lists are not there yet
	fi
done
# The packages build.sh downloads must have a candidate.
downloads=(linux-image-amd64:amd64 linux-image-arm64:arm64 busybox-static:arm64)
known() { # how many of downloads apt has a candidate for
	apt-cache policy "${downloads[@]}" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {n++} END {print n + 0}'
}
(($(known) == ${#downloads[@]})) || updated=1
if ((${#need[@]})) || ((updated)); then
	"${sudo_cmd[@]}" apt-get update -qq
fi
if ((${#need[@]})); then
	echo "e2e-deps: installing ${need[*]}" >&2
	"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ((updated)) && (($(known) != ${#downloads[@]})); then
	echo "e2e-deps: apt lacks one of ${downloads[*]} after apt-get update (a Debian mirror for both architectures?)" >&2
	exit 1
fi
