//go:build !unix

package sysmon

func startAgain([]string) error { return nil }
