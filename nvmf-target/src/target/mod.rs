//! The target model: subsystems, namespaces, hosts, listeners, controllers, queue pairs and
//! command execution. (Implemented by the target-core work; this is the API transports use.)

use crate::request::ReqPtr;
use crate::transport::{ListenAddr, QpairTransport, Transport, TransportError, TransportOpts};
use std::rc::{Rc, Weak};
use std::sync::Arc;

/// Creates a transport from its options (`nvmf_create_transport`).
pub type TransportFactory = fn(TransportOpts) -> Result<Arc<dyn Transport>, TransportError>;

/// Register the factory for a transport type (TCP registers itself; RDMA from its crate).
pub fn register_transport_factory(_trtype: crate::transport::TrType, _factory: TransportFactory) {
    todo!()
}

/// The core's side of one queue pair (admin or I/O), on the transport connection's core.
/// Before Fabrics Connect it belongs to no controller.
pub struct Qpair {
    _p: (),
}

impl Qpair {
    /// A new queue pair for a connection accepted on `listen`.
    pub fn new(_listen: ListenAddr, _transport: Weak<dyn QpairTransport>) -> Rc<Qpair> {
        todo!()
    }
    /// Run one command (the transport has its data, or buffers for it). Completes through
    /// `QpairTransport::request_complete`, possibly before returning.
    pub fn execute(self: &Rc<Self>, _req: ReqPtr) {
        todo!()
    }
    /// The connection is gone: outstanding commands still complete through the transport;
    /// the controller forgets this queue (an admin queue's loss destroys the controller).
    pub fn close(self: &Rc<Self>) {
        todo!()
    }
    /// Queue id after Connect (None before).
    pub fn qid(&self) -> Option<u16> {
        todo!()
    }
    /// Submission queue size (entries) after Connect, for `sqhd` wrap-around.
    pub fn sq_size(&self) -> u16 {
        todo!()
    }
}
