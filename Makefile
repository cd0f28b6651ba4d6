# MountSupervisor: build, man pages, install and uninstall.
#
#   make                  release build and man pages
#   make install          as root: binaries to $(BINDIR), the unit to $(UNITDIR), the example
#                         configuration to /etc/mountsup/ (an existing one is kept), the
#                         commented drop-in examples to mounts.d/ as *.toml.example (disabled:
#                         the include matches *.toml only), man pages
#   make uninstall        stops and removes all of it except a changed /etc/mountsup/mounts.toml
#   make install-only     install without building, e.g. debug binaries into a staging root:
#                         make install-only CONFIGURATION=debug DESTDIR=/tmp/stage
#
# Man pages are made from docs/*.[58].md with go-md2man (Debian package go-md2man); without it
# they are skipped with a notice.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
DESTDIR ?=

SWIFT ?= swift
CONFIGURATION ?= release
# The installed binaries must not depend on where the Swift toolchain lives.
SWIFT_FLAGS ?= --static-swift-stdlib
SCRATCH ?= .build
BUILDDIR ?= $(SCRATCH)/$(CONFIGURATION)
MD2MAN ?= $(shell command -v go-md2man 2>/dev/null)
MANBUILD ?= .build-man

BINARIES := mountsupd mountctl mountsup-mirror
# The commented examples of etc/mountsup/mounts.d, installed disabled as NAME.toml.example.
EXAMPLES := $(notdir $(wildcard etc/mountsup/mounts.d/*.toml))
MANSOURCES := $(wildcard docs/*.5.md docs/*.8.md)
MANPAGES := $(patsubst docs/%.md,$(MANBUILD)/%,$(MANSOURCES))
CONFIGDIR := $(SYSCONFDIR)/mountsup
SYSTEMD_RUNNING := $(if $(DESTDIR),,$(wildcard /run/systemd/system))

.PHONY: all build man install install-only uninstall clean-man

all: build man

build:
	$(SWIFT) build -c $(CONFIGURATION) --scratch-path $(SCRATCH) $(SWIFT_FLAGS)

ifneq ($(MD2MAN),)
man: $(MANPAGES)
else
man:
	@echo "note: go-md2man not found (apt-get install go-md2man): man pages not built"
endif

$(MANBUILD)/%: docs/%.md
	@mkdir -p $(MANBUILD)
	$(MD2MAN) -in $< -out $@

install: build
	$(MAKE) install-only

install-only: man
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(addprefix $(BUILDDIR)/,$(BINARIES)) $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/|$(BINDIR)/|g; s|/etc/mountsup/|$(CONFIGDIR)/|g' systemd/mountsupd.service \
	  > $(DESTDIR)$(UNITDIR)/mountsupd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/mountsupd.service
	install -d $(DESTDIR)$(CONFIGDIR)/mounts.d
	for example in $(EXAMPLES); do \
	  install -m 0644 etc/mountsup/mounts.d/$$example $(DESTDIR)$(CONFIGDIR)/mounts.d/$$example.example; \
	done
	@if [ -e $(DESTDIR)$(CONFIGDIR)/mounts.toml ]; then \
	  echo "kept the existing $(DESTDIR)$(CONFIGDIR)/mounts.toml"; \
	else \
	  echo "install -m 0644 etc/mountsup/mounts.toml $(DESTDIR)$(CONFIGDIR)/mounts.toml"; \
	  install -m 0644 etc/mountsup/mounts.toml $(DESTDIR)$(CONFIGDIR)/mounts.toml; \
	fi
ifneq ($(MD2MAN),)
	install -d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(filter %.5,$(MANPAGES)) $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(filter %.8,$(MANPAGES)) $(DESTDIR)$(MANDIR)/man8/
endif
ifneq ($(SYSTEMD_RUNNING),)
	systemctl daemon-reload
endif
ifneq ($(SYSTEMD_RUNNING),)
	@if systemctl is-active --quiet mountsupd.service; then \
	  echo "installed; mountsupd still runs the old binary: finish with 'mountctl upgrade' (every mount stays)"; \
	else \
	  echo "installed; edit $(CONFIGDIR)/mounts.toml, then: systemctl enable --now mountsupd"; \
	fi
else
	@echo "installed; edit $(CONFIGDIR)/mounts.toml, then: systemctl enable --now mountsupd"
endif

uninstall:
ifneq ($(SYSTEMD_RUNNING),)
	-systemctl disable --now mountsupd.service
endif
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(BINARIES))
	rm -f $(DESTDIR)$(UNITDIR)/mountsupd.service
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(filter %.5,$(MANPAGES))))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(filter %.8,$(MANPAGES))))
	@if cmp -s etc/mountsup/mounts.toml $(DESTDIR)$(CONFIGDIR)/mounts.toml; then \
	  echo "rm $(DESTDIR)$(CONFIGDIR)/mounts.toml (the unchanged example)"; \
	  rm -f $(DESTDIR)$(CONFIGDIR)/mounts.toml; \
	fi
	@for example in $(EXAMPLES); do \
	  if cmp -s etc/mountsup/mounts.d/$$example $(DESTDIR)$(CONFIGDIR)/mounts.d/$$example.example; then \
	    rm -f $(DESTDIR)$(CONFIGDIR)/mounts.d/$$example.example; \
	  fi; \
	done
	@rmdir $(DESTDIR)$(CONFIGDIR)/mounts.d $(DESTDIR)$(CONFIGDIR) 2>/dev/null \
	  || echo "kept $(DESTDIR)$(CONFIGDIR) (your configuration)"
ifneq ($(SYSTEMD_RUNNING),)
	systemctl daemon-reload
endif

clean-man:
	rm -rf $(MANBUILD)
