// Package bootloader owns the A/B boot state of a device: which slot the
// bootloader boots next, how many attempts each slot has left, and the four
// transitions the device agent needs to ask for one trial boot of a freshly
// installed slot and then commit it or roll it back. It sits on top of
// package bootenv, which only reads and writes environment bytes.
//
// # State model
//
// Every backend presents the same model (State):
//
//   - Order lists the slots the bootloader considers, first choice first. A
//     slot that is not in Order is never booted.
//   - Attempts holds, for each slot in Order, how many more times the
//     bootloader may start it without anyone confirming that it works.
//   - MaxAttempts is what MarkGood grants and what the bootloader restores
//     when every slot has run out (3 for U-Boot by default, 1 for GRUB).
//
// On every boot the bootloader picks the first slot in Order with attempts
// left, takes one attempt away, saves, and boots it. If no slot has attempts
// left it restores MaxAttempts for every slot in Order, saves, and boots
// nothing (U-Boot resets, GRUB starts its rescue entry); the next boot then
// starts over from the head of Order. A slot is therefore never lost because
// it ran out of attempts; it is lost only by leaving Order (MarkBad).
//
// Every boot is counted, not just trial boots, exactly as in RAUC: the agent
// must call MarkGood for the running slot after each successful health
// check, or a slot that works but is never confirmed falls back to the other
// slot after MaxAttempts boots. RAUC's rauc-mark-good.service does the same.
//
// The update flow built on it:
//
//	MarkGood(running)        // healthy; also a precondition for SetTrial
//	...install into the other slot...
//	SetTrial(other, 1)       // other first with 1 attempt, running kept as fallback
//	reboot                   // bootloader boots other, attempts -> 0
//	MarkGood(other)          // commit: other first with MaxAttempts
//	or MarkBad(other)        // roll back now: other leaves Order
//	or nothing               // the next boot finds other at 0 and boots the fallback
//
// # One write per transition
//
// SetTrial, MarkGood and MarkBad each read the environment and write it
// back exactly once, so a power cut leaves either the old or the new state
// and never half of a transition. That holds as long as the write itself is
// atomic, which bootenv provides for redundant U-Boot environments and for
// environments kept in regular files (grubenv, uboot.env on FAT); a single
// U-Boot copy on a raw partition can be torn. A refused transition writes
// nothing. State and Primary never write.
//
// # Corrupt and missing variables
//
// Missing variables mean what the boot script makes of them, because that
// is what the device will do: U-Boot's script defaults to BOOT_ORDER="A B"
// with MaxAttempts each, RAUC's grub.conf defaults to both slots not OK,
// which boots the rescue entry. Neither is the factory state, which
// Provision writes (rampart-agent provision): only slot A in the order, so
// that power cuts during the first boots, before the agent has run, never
// start the empty slot B. Malformed values (a
// counter that is not a small number, an unknown slot name) make State and
// Primary fail with ErrCorrupt, while the simulated boot reads them as the
// scripts do, which is "no attempts left" or "skip this name". Writes start
// from that same reading and always write a clean state, so MarkGood of the
// running slot is the repair: it is accepted even for a slot the corrupt
// state does not list.
//
// # Backends
//
// UBoot uses RAUC's U-Boot variables (BOOT_ORDER, BOOT_A_LEFT,
// BOOT_B_LEFT), GRUB uses RAUC's grubenv variables (ORDER, A_OK, A_TRY,
// B_OK, B_TRY), so the boot scripts shipped for RAUC work unchanged and
// rauc status reads the same state. Sim is a simulated bootloader with the
// same model for tests and the fleet simulator. UBoot.SimulateBoot and
// GRUB.SimulateBoot run the boot scripts' logic on the real environment, so
// one conformance suite (package bootloadertest) shows that the three agree.
package bootloader
