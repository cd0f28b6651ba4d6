/// The release of MountSupervisor, shown by `mountsupd --version` and `mountctl --version`:
/// the one place to change it.
public enum MountSupervisorRelease {
  public static let version = "0.3.0"
  /// The git commit the binary was built from (from the BuildIdentity plugin).
  public static let commit = buildCommit
  /// "0.3.0 (commit 1a2b3c4d5e6f)": what `--version` prints and an upgrade logs.
  public static let identity = "\(version) (commit \(commit))"
}
