import CFuse3
import CMountWorkerKitSupport
import Glibc

// The C callbacks of `fuse_lowlevel_ops`. Each finds the session's filesystem through the
// request's userdata, calls the Swift operation and turns its result or error into exactly one
// reply. Entries and opens that the kernel did not accept (the caller was interrupted) are
// handed back to the filesystem through forget/release so that no lookup count or handle leaks.

func fail(_ request: fuse_req_t?, _ error: FUSEError) {
  fuse_reply_err(request, error.errno)
}

private func replyEntry(_ request: fuse_req_t?, _ entry: FUSEEntry, _ fs: any FUSEFileSystem) {
  var parameter = entry.parameter
  if fuse_reply_entry(request, &parameter) != 0, entry.inode.rawValue != 0 {
    fs.forget(inode: entry.inode, lookups: 1)
  }
}

private func replyAttributes(_ request: fuse_req_t?, _ reply: FUSEAttributeReply) {
  var attributes = reply.attributes.raw
  fuse_reply_attr(request, &attributes, reply.timeout)
}

/// Fills a directory listing and replies with it; entries already added are sent even when the
/// filesystem fails part-way, so that the kernel does not ask for them again.
private func replyListing(
  _ request: fuse_req_t?, capacity: Int,
  _ fill: (inout FUSEDirectoryBuffer) throws(FUSEError) -> Void
) {
  var buffer = FUSEDirectoryBuffer(request: request!, capacity: capacity)
  do throws(FUSEError) {
    try fill(&buffer)
  } catch {
    if buffer.isEmpty { return fail(request, error) }
  }
  fuse_reply_buf(request, buffer.base, buffer.count)
}

func name(_ pointer: UnsafePointer<CChar>?) -> FUSEName { FUSEName(pointer!) }

/// A request the kernel resent after the worker that first read it died may have been carried
/// out already. For one that makes a name, `EEXIST` then means "done": it is answered with the
/// entry (a lookup of the name). One that removes or moves a name answers `ENOENT` with success.
private func repeatedEntry(
  _ error: FUSEError, _ request: fuse_req_t?, _ fs: any FUSEFileSystem, parent: fuse_ino_t,
  name entryName: UnsafePointer<CChar>?
) throws(FUSEError) -> FUSEEntry {
  guard error.errno == EEXIST, FUSERequest(request!).isResent else { throw error }
  return try fs.lookup(FUSERequest(request!), parent: FUSEInode(parent), name: name(entryName))
}

private func repeatedRemoval(_ error: FUSEError, _ request: fuse_req_t?) -> Int32 {
  error.errno == ENOENT && FUSERequest(request!).isResent ? 0 : error.errno
}

func handle(_ info: UnsafeMutablePointer<fuse_file_info>?) -> UInt64 {
  info?.pointee.fh ?? 0
}

extension SessionContext {
  static var operations: fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()

    ops.`init` = { userdata, conn in
      let context = SessionContext.of(userdata: userdata)
      var connection = FUSEConnection(
        conn!.pointee, passthroughUnavailable: Passthrough.unavailability())
      do throws(FUSEWorkerError) {
        try context.fileSystem.initialize(&connection)
      } catch {
        context.refuse(error)
        return
      }
      connection.apply(to: conn!)
      mwk_answer_init(
        context.passthrough.negotiate(connection, resumed: ResumedConnection.shared != nil), 0)
      context.notifier.ready()
    }

    ops.destroy = { userdata in
      let context = SessionContext.of(userdata: userdata)
      context.sendStopping()
      context.fileSystem.destroy()
    }

    ops.lookup = { req, parent, entryName in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let entry = try fs.lookup(
          FUSERequest(req!), parent: FUSEInode(parent), name: name(entryName))
        replyEntry(req, entry, fs)
      } catch { fail(req, error) }
    }

    ops.forget = { req, inode, lookups in
      SessionContext.of(req).fileSystem.forget(inode: FUSEInode(inode), lookups: lookups)
      fuse_reply_none(req)
    }

    ops.forget_multi = { req, count, forgets in
      let fs = SessionContext.of(req).fileSystem
      for item in UnsafeBufferPointer(start: forgets, count: count) {
        fs.forget(inode: FUSEInode(item.ino), lookups: item.nlookup)
      }
      fuse_reply_none(req)
    }

    ops.getattr = { req, inode, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        replyAttributes(
          req, try fs.getattr(FUSERequest(req!), inode: FUSEInode(inode), handle: info?.pointee.fh))
      } catch { fail(req, error) }
    }

    ops.setattr = { req, inode, attributes, valid, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let changes = FUSESetAttributes(attributes!.pointee, valid: valid)
        replyAttributes(
          req,
          try fs.setattr(
            FUSERequest(req!), inode: FUSEInode(inode), changes: changes,
            handle: info?.pointee.fh))
      } catch { fail(req, error) }
    }

    ops.readlink = { req, inode in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let target = try fs.readlink(FUSERequest(req!), inode: FUSEInode(inode))
        fuse_reply_readlink(req, target)
      } catch { fail(req, error) }
    }

    ops.mknod = { req, parent, entryName, mode, device in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let entry: FUSEEntry
        do throws(FUSEError) {
          entry = try fs.mknod(
            FUSERequest(req!), parent: FUSEInode(parent), name: name(entryName), mode: mode,
            device: device)
        } catch {
          entry = try repeatedEntry(error, req, fs, parent: parent, name: entryName)
        }
        replyEntry(req, entry, fs)
      } catch { fail(req, error) }
    }

    ops.mkdir = { req, parent, entryName, mode in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let entry: FUSEEntry
        do throws(FUSEError) {
          entry = try fs.mkdir(
            FUSERequest(req!), parent: FUSEInode(parent), name: name(entryName), mode: mode)
        } catch {
          entry = try repeatedEntry(error, req, fs, parent: parent, name: entryName)
        }
        replyEntry(req, entry, fs)
      } catch { fail(req, error) }
    }

    ops.unlink = { req, parent, entryName in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.unlink(FUSERequest(req!), parent: FUSEInode(parent), name: name(entryName))
        fuse_reply_err(req, 0)
      } catch { fuse_reply_err(req, repeatedRemoval(error, req)) }
    }

    ops.rmdir = { req, parent, entryName in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.rmdir(FUSERequest(req!), parent: FUSEInode(parent), name: name(entryName))
        fuse_reply_err(req, 0)
      } catch { fuse_reply_err(req, repeatedRemoval(error, req)) }
    }

    ops.symlink = { req, target, parent, entryName in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let entry: FUSEEntry
        do throws(FUSEError) {
          entry = try fs.symlink(
            FUSERequest(req!), target: name(target), parent: FUSEInode(parent),
            name: name(entryName))
        } catch {
          entry = try repeatedEntry(error, req, fs, parent: parent, name: entryName)
        }
        replyEntry(req, entry, fs)
      } catch { fail(req, error) }
    }

    ops.rename = { req, parent, entryName, newParent, newName, flags in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.rename(
          FUSERequest(req!), parent: FUSEInode(parent), name: name(entryName),
          newParent: FUSEInode(newParent), newName: name(newName),
          flags: FUSERenameFlags(rawValue: flags))
        fuse_reply_err(req, 0)
      } catch { fuse_reply_err(req, repeatedRemoval(error, req)) }
    }

    ops.link = { req, inode, newParent, newName in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let entry: FUSEEntry
        do throws(FUSEError) {
          entry = try fs.link(
            FUSERequest(req!), inode: FUSEInode(inode), newParent: FUSEInode(newParent),
            newName: name(newName))
        } catch {
          entry = try repeatedEntry(error, req, fs, parent: newParent, name: newName)
        }
        replyEntry(req, entry, fs)
      } catch { fail(req, error) }
    }

    ops.read = { req, inode, size, offset, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        switch try fs.read(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), offset: Int64(offset),
          size: size)
        {
        case .file(let descriptor, let offset, let length):
          mwk_reply_fd_data(req, descriptor, offset, length)
        case .bytes(let bytes):
          _ = bytes.withUnsafeBytes { buffer in
            fuse_reply_buf(
              req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), min(buffer.count, size))
          }
        }
      } catch { fail(req, error) }
    }

    ops.write = { req, inode, bytes, size, offset, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let written = try fs.write(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), offset: Int64(offset),
          data: UnsafeRawBufferPointer(start: bytes, count: size))
        fuse_reply_write(req, written)
      } catch { fail(req, error) }
    }

    ops.flush = { req, inode, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.flush(FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info))
        fuse_reply_err(req, 0)
      } catch { fail(req, error) }
    }

    ops.fsync = { req, inode, dataOnly, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.fsync(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), dataOnly: dataOnly != 0)
        fuse_reply_err(req, 0)
      } catch { fail(req, error) }
    }

    ops.readdir = { req, inode, size, offset, info in
      let fs = SessionContext.of(req).fileSystem
      replyListing(req, capacity: size) { (buffer) throws(FUSEError) in
        try fs.readdir(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), offset: Int64(offset),
          into: &buffer)
      }
    }

    ops.readdirplus = { req, inode, size, offset, info in
      let fs = SessionContext.of(req).fileSystem
      replyListing(req, capacity: size) { (buffer) throws(FUSEError) in
        try fs.readdirplus(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), offset: Int64(offset),
          into: &buffer)
      }
    }

    ops.fsyncdir = { req, inode, dataOnly, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.fsyncdir(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), dataOnly: dataOnly != 0)
        fuse_reply_err(req, 0)
      } catch { fail(req, error) }
    }

    ops.statfs = { req, inode in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        var statistics = try fs.statfs(FUSERequest(req!), inode: FUSEInode(inode))
        fuse_reply_statfs(req, &statistics)
      } catch { fail(req, error) }
    }

    ops.access = { req, inode, mask in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.access(FUSERequest(req!), inode: FUSEInode(inode), mask: mask)
        fuse_reply_err(req, 0)
      } catch { fail(req, error) }
    }

    ops.fallocate = { req, inode, mode, offset, length, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.fallocate(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), mode: mode,
          offset: Int64(offset), length: Int64(length))
        fuse_reply_err(req, 0)
      } catch { fail(req, error) }
    }

    ops.copy_file_range = {
      req, sourceInode, sourceOffset, sourceInfo, targetInode, targetOffset, targetInfo, length,
      flags in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let copied = try fs.copyFileRange(
          FUSERequest(req!), from: FUSEInode(sourceInode), handle: handle(sourceInfo),
          offset: Int64(sourceOffset), to: FUSEInode(targetInode), handle: handle(targetInfo),
          offset: Int64(targetOffset), length: length, flags: UInt32(bitPattern: flags))
        fuse_reply_write(req, copied)
      } catch { fail(req, error) }
    }

    ops.lseek = { req, inode, offset, whence, info in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        let result = try fs.lseek(
          FUSERequest(req!), inode: FUSEInode(inode), handle: handle(info), offset: Int64(offset),
          whence: whence)
        fuse_reply_lseek(req, off_t(result))
      } catch { fail(req, error) }
    }

    addFileOperations(to: &ops)
    addExtendedAttributeOperations(to: &ops)
    return ops
  }
}
