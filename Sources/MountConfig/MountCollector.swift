/// Gathers the mounts of all files in reading order, rejecting names and mountpoints seen before.
struct MountCollector {
  let context: LoadContext
  var mounts: [MountSpec] = []
  /// The file of every mount name seen, valid or not.
  var definedIn: [String: String] = [:]
  /// Every mount whose command is known, valid or not: their programs are looked up at the end.
  var withCommands: [MountSpec] = []
  var byMountpoint: [String: MountSpec] = [:]

  init(context: LoadContext) {
    self.context = context
  }

  mutating func add(mountsOf root: TableReader, _ diagnostics: inout Diagnostics) {
    guard
      let section = diagnostics.check({ () throws(ConfigError) in try root.table("mounts") })
        ?? nil
    else { return }
    for (name, value) in section.table {
      guard !NulEscapes.containsNul(name) else {
        diagnostics.errors.append(
          ConfigError(
            code: .invalidValue, file: root.file, mount: name,
            message: "the mount name contains a NUL character (\\u0000)"))
        continue
      }
      guard isValidMountName(name) else {
        diagnostics.errors.append(
          ConfigError(
            code: .invalidValue, file: root.file, mount: name,
            message: "invalid mount name: use letters, digits and \"_.@-\", starting with a letter"
              + " or digit (the name appears in logs and paths)"))
        continue
      }
      if let earlier = definedIn[name] {
        diagnostics.errors.append(
          ConfigError(
            code: .duplicateName, file: root.file, mount: name,
            message: "a mount of this name is already defined in \(earlier)"))
        continue
      }
      definedIn[name] = root.file
      guard let table = value.table else {
        diagnostics.errors.append(section.wrongType(name, expected: "a table", value))
        continue
      }
      let mount = TableReader(table, file: root.file, mount: name)
      let decoded = MountSpec.decode(
        name: name, reading: mount, context: context, diagnostics: &diagnostics)
      let spec = decoded.spec
      if decoded.hasCommand { withCommands.append(spec) }
      guard decoded.hasMountpoint else { continue }
      if let other = byMountpoint[spec.mountpoint] {
        // Compared after resolving symlinks: two spellings of one directory are one mountpoint.
        let resolved = spec.mountpointAsWritten ?? other.mountpointAsWritten
        diagnostics.errors.append(
          mount.error(
            .duplicateMountpoint, key: "mountpoint",
            "\(tomlQuoted(spec.mountpoint)) is already the mountpoint of mount"
              + " \(tomlQuoted(other.name)) in \(other.sourceFile)"
              + (resolved == nil
                ? ""
                : " (written \(tomlQuoted(spec.mountpointAsWritten ?? spec.mountpoint)) here and "
                  + "\(tomlQuoted(other.mountpointAsWritten ?? other.mountpoint)) there; both "
                  + "resolve to the same directory)")))
        continue
      }
      byMountpoint[spec.mountpoint] = spec
      if decoded.isValid { mounts.append(spec) }
    }
  }

  /// Looks up every mount's `command[0]` as the daemon would run it, once all mounts are known:
  /// a program inside another configured mount (mounted first) or inside any FUSE mount is not
  /// looked at.
  func checkCommands(_ diagnostics: inout Diagnostics) {
    let mountpoints = Set(byMountpoint.keys)
    for spec in withCommands {
      guard let program = spec.command.first else { continue }
      let outcome = context.options.commandLookup.check(program) { path in
        context.isInsideFUSE(path) || isAtOrInside(path, anyOf: mountpoints)
      }
      guard case .failed(let failure) = outcome else { continue }
      let what: String
      if case .notFound(let command, let searched) = failure {
        what =
          "command[0] \(tomlQuoted(command)) is not found on mountsupd's search path (its PATH, "
          + "then its own directory: \(searched.joined(separator: ":"))); install it or give "
          + "its absolute path"
      } else {
        what = "command[0] \(failure)"
      }
      if context.options.missingCommandsAreErrors {
        diagnostics.errors.append(
          ConfigError(
            code: .commandNotFound, file: spec.sourceFile, mount: spec.name, key: "command",
            message: what))
      } else {
        diagnostics.warnings.append(
          ConfigWarning(
            file: spec.sourceFile, mount: spec.name, key: "command",
            message: what + "; the mount will fail to start unless that changes by then"))
      }
    }
  }
}
