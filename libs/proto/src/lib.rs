//! Generated gRPC services and versioned integration events, compiled from proto/.

pub mod hearing {
    pub mod v1 {
        tonic::include_proto!("agora.hearing.v1");
    }
}

pub mod response {
    pub mod v1 {
        tonic::include_proto!("agora.response.v1");
    }
}

/// The encoded descriptors of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agora_descriptor");
