extension Configuration {
  /// The configuration as `mountsupd --check-config` prints it: every mount with every field
  /// resolved (defaults filled in, placeholders substituted, durations as `"10s"`/`"100ms"`), so an
  /// operator sees what will run rather than what was written.
  ///
  /// The output is itself valid TOML (unset optional keys appear as comments, include files as
  /// comments), so it can be diffed, or saved as a single-file configuration.
  public func renderResolved() -> String {
    var lines = ["# \(counted(mounts.count, "mount")), resolved from:"]
    lines += files.map { "#   " + tomlEscaped($0) }
    if !dropInsWithoutMounts.isEmpty {
      lines.append("# Read, but defining no mounts:")
      lines += dropInsWithoutMounts.map { "#   " + tomlEscaped($0) }
    }
    lines += ["", "[supervisor]"]
    lines += renderFields([
      ("control_socket", tomlQuoted(supervisor.controlSocket)),
      ("admin_group", supervisor.adminGroup.map(tomlQuoted)),
      ("status_group", supervisor.statusGroup.map(tomlQuoted)),
    ])
    for mount in mounts {
      lines += ["", "[mounts.\(tomlKey(mount.name))]", "# from " + tomlEscaped(mount.sourceFile)]
      if let written = mount.mountpointAsWritten {
        lines.append("# mountpoint written as \(tomlQuoted(written)), resolved through symlinks")
      }
      lines += renderFields([
        ("mountpoint", tomlQuoted(mount.mountpoint)),
        ("command", "[" + mount.command.map(tomlQuoted).joined(separator: ", ") + "]"),
        ("readiness", tomlQuoted(mount.readiness.rawValue)),
        ("probe_path", mount.probePath.map(tomlQuoted)),
        ("restart", tomlQuoted(mount.restart.rawValue)),
        ("required", String(mount.required)),
        ("start_timeout", tomlQuoted(formatDuration(mount.startTimeout))),
        ("stop_timeout", tomlQuoted(formatDuration(mount.stopTimeout))),
        ("restart_delay", tomlQuoted(formatDuration(mount.restartDelay))),
        ("restart_delay_max", tomlQuoted(formatDuration(mount.restartDelayMax))),
        ("start_limit_burst", String(mount.startLimitBurst)),
        ("start_limit_interval", tomlQuoted(formatDuration(mount.startLimitInterval))),
        ("hang_timeout", tomlQuoted(formatDuration(mount.hangTimeout))),
        ("user", mount.user.map(tomlQuoted)),
        ("group", mount.group.map(tomlQuoted)),
        ("environment", renderInlineTable(mount.environment)),
      ])
    }
    return lines.joined(separator: "\n") + "\n"
  }
}

/// `key = value` lines with the `=` aligned; a `nil` value is shown as a comment, not left out,
/// so every field of the schema is visible.
private func renderFields(_ fields: [(key: String, value: String?)]) -> [String] {
  let width = fields.map(\.key.count).max() ?? 0
  return fields.map { field in
    let padded = field.key.paddedRight(to: width)
    guard let value = field.value else { return "# \(padded) (not set)" }
    return "\(padded) = \(value)"
  }
}

private func renderInlineTable(_ table: [String: String]) -> String {
  guard !table.isEmpty else { return "{}" }
  let entries = table.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
    .map { "\(tomlKey($0.key)) = \(tomlQuoted($0.value))" }
  return "{ " + entries.joined(separator: ", ") + " }"
}

extension String {
  fileprivate func paddedRight(to length: Int) -> String {
    self + String(repeating: " ", count: max(0, length - count))
  }
}
