//! A Kafka protocol peer for benchmarks and trials without a Kafka cluster: librdkafka's mock
//! cluster, in this process, until it is killed.
//!
//!   kafka_mock_cluster [BROKERS] [TOPIC:PARTITIONS ...]
//!
//! Prints `bootstrap.servers` on the first line of stdout, then serves. Topics not listed are
//! created on first use (4 partitions).

use std::io::Write;

use rdkafka::mocking::MockCluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let brokers: i32 = args.next().map_or(Ok(1), |b| b.parse())?;
    let cluster = MockCluster::new(brokers)?;
    for topic in args {
        let (name, partitions) = topic.split_once(':').ok_or("topics are TOPIC:PARTITIONS")?;
        cluster.create_topic(name, partitions.parse()?, brokers.min(3))?;
    }
    let mut out = std::io::stdout();
    writeln!(out, "{}", cluster.bootstrap_servers())?;
    out.flush()?;
    loop {
        std::thread::park();
    }
}
