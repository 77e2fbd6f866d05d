package config

import (
	_ "embed"
	"fmt"
	"os"
)

// Example is an annotated config that Load accepts (`haul config
// example`).
//
//go:embed example.toml
var Example string

// Check reports what Load does not: files the config names that cannot be
// read here. They are warnings, not errors: a config is often written
// before its keys exist, or checked on another machine.
func (c *Config) Check() []string {
	var warn []string
	need := func(what, path string) {
		if path == "" {
			return
		}
		if _, err := os.Stat(path); err != nil {
			warn = append(warn, fmt.Sprintf("%s %s: %v", what, path, err))
		}
	}
	need("password_file", c.PasswordFile)
	need("repository", c.Repository)
	need("[notify] ping_url_file", c.Notify.PingURLFile)
	for _, h := range c.Hosts {
		need(fmt.Sprintf("host %q identity_file", h.Name), h.IdentityFile)
		need(fmt.Sprintf("host %q known_hosts", h.Name), h.KnownHosts)
		need(fmt.Sprintf("host %q [hosts.notify] ping_url_file", h.Name), h.Notify.PingURLFile)
	}
	return warn
}
