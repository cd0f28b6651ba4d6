import CFuse3
import CMountWorkerKitSupport
import Glibc

// The callbacks that open and release files and directories. Opens that pass through
// (``FUSEOpenReply/passthrough``) get their backing id from the session's ``Passthrough``,
// which their release gives back.

extension SessionContext {
  static func addFileOperations(to ops: inout fuse_lowlevel_ops) {
    ops.open = { req, inode, info in
      let context = SessionContext.of(req)
      let fs = context.fileSystem
      do throws(FUSEError) {
        let flags = info!.pointee.flags
        let reply = try fs.open(FUSERequest(req!), inode: FUSEInode(inode), flags: flags)
        reply.apply(to: info!)
        let backing = try context.attach(reply, node: inode, flags: flags)
        let result =
          if let backing {
            mwk_reply_open_passthrough(req, info, backing)
          } else {
            fuse_reply_open(req, info)
          }
        if result != 0 { context.release(reply, node: inode, flags: flags) }
      } catch { fail(req, error) }
    }

    ops.create = { req, parent, entryName, mode, info in
      let context = SessionContext.of(req)
      let fs = context.fileSystem
      do throws(FUSEError) {
        let flags = info!.pointee.flags
        let (entry, reply) = try fs.create(
          FUSERequest(req!), parent: FUSEInode(parent), name: name(entryName), mode: mode,
          flags: flags)
        reply.apply(to: info!)
        let backing: Int32?
        do throws(FUSEError) {
          backing = try context.attach(reply, node: entry.inode.rawValue, flags: flags)
        } catch {
          fs.forget(inode: entry.inode, lookups: 1)
          throw error
        }
        var parameter = entry.parameter
        let result =
          if let backing {
            mwk_reply_create_passthrough(req, &parameter, info, backing)
          } else {
            fuse_reply_create(req, &parameter, info)
          }
        if result != 0 {
          context.release(reply, node: entry.inode.rawValue, flags: flags)
          fs.forget(inode: entry.inode, lookups: 1)
        }
      } catch { fail(req, error) }
    }

    ops.release = { req, inode, info in
      let context = SessionContext.of(req)
      context.fileSystem.release(
        inode: FUSEInode(inode), handle: handle(info), flags: info?.pointee.flags ?? 0)
      context.passthrough.detach(node: inode, handle: handle(info))
      fuse_reply_err(req, 0)
    }

    ops.opendir = { req, inode, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let reply = try fs.opendir(
          FUSERequest(req!), inode: FUSEInode(inode), flags: info!.pointee.flags)
        reply.apply(to: info!)
        if fuse_reply_open(req, info) != 0 {
          fs.releasedir(inode: FUSEInode(inode), handle: reply.handle)
        }
      } catch { fail(req, error) }
    }

    ops.releasedir = { req, inode, info in
      SessionContext.of(req).fileSystem.releasedir(inode: FUSEInode(inode), handle: handle(info))
      fuse_reply_err(req, 0)
    }
  }

  /// The backing id for an open, if it passes through; an open that cannot be recorded is
  /// released again and fails.
  private func attach(_ reply: FUSEOpenReply, node: fuse_ino_t, flags: Int32) throws(FUSEError)
    -> Int32?
  {
    do throws(FUSEError) {
      return try passthrough.attach(reply, node: node)
    } catch {
      fileSystem.release(inode: FUSEInode(node), handle: reply.handle, flags: flags)
      throw error
    }
  }

  /// Hands back an open whose reply the kernel did not take (the caller was interrupted).
  private func release(_ reply: FUSEOpenReply, node: fuse_ino_t, flags: Int32) {
    passthrough.detach(node: node, handle: reply.handle)
    fileSystem.release(inode: FUSEInode(node), handle: reply.handle, flags: flags)
  }
}
