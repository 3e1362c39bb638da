//go:build !cgo || nopkcs11

package main

const pkcs11Built = false
