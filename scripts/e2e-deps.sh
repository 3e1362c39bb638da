#!/usr/bin/env bash
# Installs what the end-to-end boot tests (make e2e, test/e2e) need when it
# is missing: QEMU, BIOS GRUB, U-Boot for QEMU and its tools, e2fsprogs,
# busybox, sfdisk, cpio. Debian's kernels are not installed: test/e2e/build.sh
# fetches them with apt-get download and unpacks them. Idempotent and quiet
# when everything is present.
set -euo pipefail

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

if ((${#need[@]})); then
	echo "e2e-deps: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	sudo_cmd=()
	[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
	"${sudo_cmd[@]}" apt-get update -qq
	"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
