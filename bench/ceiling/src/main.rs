//! `canon-ceiling [ADDRESS]`: serves the ceiling's routes (see the library) on
//! ADDRESS (default 127.0.0.1:8090) until killed. Started by `bench/run`.

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = match tokio::net::TcpListener::bind(&address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("canon-ceiling: cannot listen on {address}: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = axum::serve(listener, canon_ceiling::router()).await {
        eprintln!("canon-ceiling: {error}");
        std::process::exit(1);
    }
}
