/// The release of MountSupervisor, shown by `mountsupd --version` and `mountctl --version`:
/// the one place to change it.
public enum MountSupervisorRelease {
  public static let version = "0.2.0"
}
