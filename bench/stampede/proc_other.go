//go:build !linux

package main

import "syscall"

// childAttr has nothing to add outside Linux: the harness stops its
// servers itself, also when interrupted.
func childAttr() *syscall.SysProcAttr { return nil }
