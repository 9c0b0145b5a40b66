//! A proxy config as JSON, for people: the CP's `_config` endpoint and the
//! agent's `/config_dump` show the same shape.

use serde_json::{Value, json};

use crate::v1::{Protocol, ProxyConfig};

fn protocol(p: i32) -> &'static str {
    match Protocol::try_from(p) {
        Ok(Protocol::Http) => "http",
        Ok(Protocol::Http2) => "http2",
        Ok(Protocol::Grpc) => "grpc",
        _ => "tcp",
    }
}

pub fn proxy_config(config: &ProxyConfig) -> Value {
    let inbounds: Vec<Value> = config
        .inbounds
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "address": i.address,
                "port": i.port,
                "serviceAddress": i.service_address,
                "servicePort": i.service_port,
                "protocol": protocol(i.protocol),
                "service": i.service,
                "tags": i.tags,
            })
        })
        .collect();
    let outbounds: Vec<Value> = config
        .outbounds
        .iter()
        .map(|o| {
            let endpoints: Vec<Value> = o
                .cluster
                .iter()
                .flat_map(|c| &c.endpoints)
                .map(|e| json!({"address": e.address, "port": e.port, "weight": e.weight, "tags": e.tags}))
                .collect();
            json!({
                "name": o.name,
                "address": o.address,
                "port": o.port,
                "service": o.service,
                "protocol": protocol(o.protocol),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({"mesh": config.mesh, "name": config.name, "inbounds": inbounds, "outbounds": outbounds})
}
