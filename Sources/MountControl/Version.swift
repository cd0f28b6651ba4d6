/// The release of MountSupervisor, shown by `mountsupd --version` and `mountctl --version`:
/// the one place to change it.
public enum MountSupervisorRelease {
  public static let version = "0.3.0"
  /// The git commit the binary was built from: 12 hex digits, "-modified" when the tree
  /// differed from it, "unknown" outside a git checkout (see Plugins/BuildIdentity).
  public static let commit: String = {
    let parts = buildCommit.split(separator: " ")
    guard let hash = parts.first, hash != "unknown" else { return "unknown" }
    return String(hash.prefix(12)) + (parts.count > 1 ? "-modified" : "")
  }()
  /// "0.3.0 (commit 1a2b3c4d5e6f)": what `--version` prints and an upgrade logs.
  public static let identity = "\(version) (commit \(commit))"
}
