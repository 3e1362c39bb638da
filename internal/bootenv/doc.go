// Package bootenv reads and writes bootloader environments, the only channel
// through which the device agent can ask the bootloader for a trial boot of
// the inactive A/B slot and later commit or roll it back.
//
// It owns two on-disk formats and keeps them byte-compatible with the tools
// that already exist on devices, so that boot scripts, fw_printenv and
// grub-editenv keep working next to the agent:
//
//   - the U-Boot environment as written by U-Boot's saveenv, libubootenv's
//     fw_setenv and u-boot-tools' mkenvimage, single or redundant, located
//     through an fw_env.config file;
//   - GRUB's environment block (grubenv) as written by grub-editenv.
//
// Writes are crash-safe where the medium allows it: a redundant U-Boot
// environment always rewrites the copy that is not in use, so a power cut
// leaves the previous copy valid; an environment kept in a regular file is
// replaced atomically. A single U-Boot copy on a block device can only be
// written in place and is lost by a torn write, which is why A/B setups must
// configure a redundant environment.
//
// The package is pure Go so the agent can be built without cgo.
package bootenv
