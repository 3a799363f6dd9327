//! A network's delay between the members and the nodes, where the machine cannot give one
//! (`tc netem` needs a kernel module containers often lack): a UDP relay in this process that
//! holds every datagram for a fixed time each way. QUIC runs through it unchanged (TLS is end to
//! end; the node sees the relay's address), so a run shows what round trips cost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

/// Largest datagram relayed (QUIC's are far smaller).
const MAX_DATAGRAM: usize = 65_536;

/// Starts a relay to `node` that delays each datagram by `one_way` in each direction; returns
/// the address members use instead of the node's. It runs as long as the runtime.
pub async fn relay(node: SocketAddr, one_way: Duration) -> std::io::Result<SocketAddr> {
    let front = Arc::new(UdpSocket::bind(("127.0.0.1", 0)).await?);
    let address = front.local_addr()?;
    tokio::spawn(async move {
        // One socket towards the node per member endpoint, so the node tells them apart.
        let mut towards_node: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        while let Ok((len, member)) = front.recv_from(&mut buffer).await {
            let socket = match towards_node.get(&member) {
                Some(socket) => socket.clone(),
                None => {
                    let Ok(socket) = connected(node).await else {
                        continue; // as a network drops what it cannot carry
                    };
                    tokio::spawn(back_to_member(
                        socket.clone(),
                        front.clone(),
                        member,
                        one_way,
                    ));
                    towards_node.insert(member, socket.clone());
                    socket
                }
            };
            let datagram = buffer[..len].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(one_way).await;
                let _ = socket.send(&datagram).await;
            });
        }
    });
    Ok(address)
}

async fn connected(node: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
    let socket = UdpSocket::bind(("127.0.0.1", 0)).await?;
    socket.connect(node).await?;
    Ok(Arc::new(socket))
}

/// Carries the node's datagrams for one member back, each `one_way` later.
async fn back_to_member(
    from_node: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    member: SocketAddr,
    one_way: Duration,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    while let Ok(len) = from_node.recv(&mut buffer).await {
        let datagram = buffer[..len].to_vec();
        let front = front.clone();
        tokio::spawn(async move {
            tokio::time::sleep(one_way).await;
            let _ = front.send_to(&datagram, member).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram and its answer each take the delay: the round trip is at least twice it.
    #[tokio::test]
    async fn a_round_trip_through_the_relay_takes_the_delay_each_way() {
        let echo = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
        let echo_address = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            while let Ok((len, from)) = echo.recv_from(&mut buffer).await {
                echo.send_to(&buffer[..len], from).await.unwrap();
            }
        });
        let one_way = Duration::from_millis(30);
        let relay_address = relay(echo_address, one_way).await.unwrap();
        let member = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
        for n in 0..3u8 {
            let sent = tokio::time::Instant::now();
            member.send_to(&[n; 5], relay_address).await.unwrap();
            let mut buffer = [0u8; 64];
            let (len, from) = member.recv_from(&mut buffer).await.unwrap();
            assert_eq!((&buffer[..len], from), (&[n; 5][..], relay_address));
            assert!(sent.elapsed() >= 2 * one_way, "{:?}", sent.elapsed());
        }
    }
}
