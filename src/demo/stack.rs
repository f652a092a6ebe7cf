//! Two stateful order-API stacks for the demo: the legacy "monolith" and the
//! "new" order service. Clients log in for a token, which every order
//! endpoint requires; orders are created, read, paid and cancelled. The
//! stacks share one catalogue and seeded order book and differ as real
//! rewrites do: each issues its own tokens, legacy numbers new orders by
//! auto-increment and new by snowflake ids above 2^53, and timestamps and
//! request-id headers differ (noise). Four deliberate parity bugs in the new
//! stack:
//!
//! 1. `GET /api/orders/{id}`: the total is rounded per line instead of once
//!    (a cent off on some multi-line orders);
//! 2. `GET /api/products/{id}`: the `currency` field is left out;
//! 3. `POST /api/orders` with no items: 422 instead of the legacy 400;
//! 4. a paid order reads back as `"PAID"` instead of `"paid"`: only a replay
//!    that follows each stack's own token and order ids reads it back at all;
//! 5. started with a webhook URL ([`start_calling`]), both stacks call it
//!    when an order is created (`order.created`) and paid (`order.paid`),
//!    passing the request's `traceparent` on; the new service sends
//!    `order.paid` twice. Its answers show nothing of it: only its effects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The monolith being replaced: the reference.
    Legacy,
    /// The rewrite, with three parity bugs.
    New,
}

/// How a stack makes tokens and order ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ids {
    /// Each stack issues its own: random tokens, legacy's auto-increment and
    /// new's snowflake ids. What the demo runs.
    #[default]
    Issued,
    /// Both stacks derive them from the request alone (the token from the
    /// user, an order id from its user and body), so a replay that carries
    /// the recorded values finds them. The replay bench uses it to weigh
    /// correlation against `--no-correlate` on equal work at the stacks.
    Replayable,
}

/// Seeded orders `FIRST_ORDER..=LAST_READ_ORDER` are only ever read by the
/// demo workload; the rest are only ever paid, once each, so that replaying
/// against fresh stacks gives the same answers whatever the request order.
/// Orders the workload creates are legacy's `LAST_ORDER + 1` onwards.
pub const FIRST_ORDER: u64 = 1001;
/// Last order that the workload reads.
pub const LAST_READ_ORDER: u64 = 1300;
/// Last seeded order; those after `LAST_READ_ORDER` are paid.
pub const LAST_ORDER: u64 = 1600;
/// Products are `1..=PRODUCTS`.
pub const PRODUCTS: u64 = 40;
/// Customers `c1..=c30` own the read orders.
pub const READ_CUSTOMERS: u64 = 30;

const TAX_BASIS_POINTS: i64 = 825;

/// A running demo stack.
pub struct DemoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl DemoServer {
    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts a freshly seeded stack on an ephemeral loopback port.
pub async fn start(flavor: Flavor) -> std::io::Result<DemoServer> {
    start_with(flavor, Ids::Issued).await
}

/// [`start`], with the given way of making ids.
pub async fn start_with(flavor: Flavor, ids: Ids) -> std::io::Result<DemoServer> {
    start_stack(flavor, ids, None).await
}

/// [`start`], calling the webhook base URL `hooks` (`{hooks}/hooks`) when
/// an order is created or paid.
pub async fn start_calling(flavor: Flavor, hooks: &str) -> std::io::Result<DemoServer> {
    start_stack(
        flavor,
        Ids::Issued,
        Some(hooks.trim_end_matches('/').to_string()),
    )
    .await
}

async fn start_stack(
    flavor: Flavor,
    ids: Ids,
    hooks: Option<String>,
) -> std::io::Result<DemoServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stack = Arc::new(Stack {
        flavor,
        ids,
        book: Mutex::new(Book::seeded()),
        tokens: Mutex::new(BTreeMap::new()),
        hooks: hooks.map(|url| (crate::http::client(Duration::from_secs(5)), url)),
    });
    let (stop, stopped) = oneshot::channel();
    let handler = move |req, _peer| {
        let stack = stack.clone();
        async move { stack.handle(req).await }
    };
    let task = tokio::spawn(crate::server::serve(
        listener,
        None,
        handler,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(2),
    ));
    Ok(DemoServer { addr, stop, task })
}

struct Stack {
    flavor: Flavor,
    ids: Ids,
    book: Mutex<Book>,
    /// Tokens this stack issued, and to whom.
    tokens: Mutex<BTreeMap<String, String>>,
    /// Where it calls its webhooks, if anywhere.
    hooks: Option<(crate::http::Client, String)>,
}

struct Product {
    name: String,
    price_cents: i64,
    stock: u64,
}

struct Order {
    customer: String,
    items: Vec<(u64, i64)>,
    created_at: String,
    paid: Option<Payment>,
    cancelled: bool,
}

struct Payment {
    id: String,
    at: String,
}

struct Book {
    products: BTreeMap<u64, Product>,
    orders: BTreeMap<u64, Order>,
    /// Legacy's next auto-increment order id.
    next_order: u64,
    /// New's snowflake sequence.
    sequence: u64,
}

impl Book {
    fn seeded() -> Book {
        let products = (1..=PRODUCTS)
            .map(|id| {
                let product = Product {
                    name: format!("Product {id}"),
                    price_cents: (id as i64 * 1_379 % 9_000) + 199,
                    stock: id * 7 % 50,
                };
                (id, product)
            })
            .collect();
        let orders = (FIRST_ORDER..=LAST_ORDER)
            .map(|id| (id, seeded_order(id)))
            .collect();
        Book {
            products,
            orders,
            next_order: LAST_ORDER + 1,
            sequence: 0,
        }
    }
}

fn seeded_order(id: u64) -> Order {
    let customer = if id <= LAST_READ_ORDER {
        (id - FIRST_ORDER) % READ_CUSTOMERS + 1
    } else {
        READ_CUSTOMERS + 1 + (id % 20)
    };
    let lines = 1 + id % 4;
    let items = (0..lines)
        .map(|k| ((id * 7 + k * 13) % PRODUCTS + 1, 1 + ((id + k) % 3) as i64))
        .collect();
    Order {
        customer: format!("c{customer}"),
        items,
        created_at: format!(
            "2026-03-{:02}T{:02}:{:02}:00Z",
            1 + id % 28,
            id % 24,
            id % 60
        ),
        paid: None,
        cancelled: false,
    }
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

#[derive(Deserialize)]
struct NewOrder {
    customer: String,
    #[serde(default)]
    items: Vec<NewItem>,
}

#[derive(Deserialize)]
struct NewItem {
    product_id: u64,
    qty: i64,
}

type Answer = (StatusCode, Value);

impl Stack {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let user = self.signed_in(&parts.headers);
        let (status, value) = self.route(&parts.method, &segments, &query, &body, user);
        if let Some((client, url)) = &self.hooks {
            let events = self.events(&parts.method, &segments, status, &value);
            if !events.is_empty() {
                let trace = parts.headers.get("traceparent").cloned();
                let (client, url) = (client.clone(), format!("{url}/hooks"));
                // After the answer, as a queue's consumer would.
                tokio::spawn(async move {
                    for event in events {
                        call(&client, &url, trace.clone(), event).await;
                    }
                });
            }
        }
        self.respond(status, value)
    }

    /// The webhook events an answer makes: `order.created` for a created
    /// order, `order.paid` for a payment (parity bug 5: twice from the new
    /// service).
    fn events(
        &self,
        method: &Method,
        segments: &[&str],
        status: StatusCode,
        order: &Value,
    ) -> Vec<Value> {
        let event = |kind: &str| {
            let mut event = json!({"type": kind, "order_id": order["id"], "total": order["total"],
                                   "occurred_at": now()});
            if kind == "order.paid" {
                event["payment_id"] = order["payment_id"].clone();
            }
            event
        };
        match (method, segments, status) {
            (&Method::POST, ["api", "orders"], StatusCode::CREATED) => vec![event("order.created")],
            (&Method::POST, ["api", "orders", _, "pay"], StatusCode::OK) => {
                let times = if self.flavor == Flavor::New { 2 } else { 1 };
                vec![event("order.paid"); times]
            }
            _ => Vec::new(),
        }
    }

    /// The user of the token the request carries, if this stack issued it.
    fn signed_in(&self, headers: &hyper::HeaderMap) -> Option<String> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        self.tokens.lock().unwrap().get(token).cloned()
    }

    fn route(
        &self,
        method: &Method,
        segments: &[&str],
        query: &str,
        body: &[u8],
        user: Option<String>,
    ) -> Answer {
        let id = |s: &str| s.parse::<u64>().ok();
        match (method, segments) {
            (&Method::POST, ["api", "login"]) => self.login(body),
            (&Method::GET, ["api", "products"]) => self.list_products(),
            (&Method::GET, ["api", "products", p]) => self.product(id(p)),
            (_, ["api", "orders", ..]) if user.is_none() => {
                error(StatusCode::UNAUTHORIZED, "sign in first")
            }
            (&Method::GET, ["api", "orders"]) => self.list_orders(query),
            (&Method::POST, ["api", "orders"]) => {
                self.create_order(body, user.as_deref().unwrap_or_default())
            }
            (&Method::GET, ["api", "orders", o]) => self.order(id(o)),
            (&Method::POST, ["api", "orders", o, "pay"]) => self.pay(id(o)),
            (&Method::POST, ["api", "orders", o, "cancel"]) => self.cancel(id(o)),
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    fn login(&self, body: &[u8]) -> Answer {
        let Ok(login) = serde_json::from_slice::<Login>(body) else {
            return error(StatusCode::BAD_REQUEST, "body must name a user");
        };
        let mut rng = rand::thread_rng();
        // Each stack issues tokens of its own kind.
        let token = match (self.ids, self.flavor) {
            (Ids::Replayable, _) => format!("lgc-{:016x}", fnv1a(login.user.as_bytes())),
            (_, Flavor::Legacy) => format!("lgc-{:032x}", rng.gen::<u128>()),
            (_, Flavor::New) => format!("eyJ{:032x}{:016x}", rng.gen::<u128>(), rng.gen::<u64>()),
        };
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), login.user.clone());
        (StatusCode::OK, json!({"token": token, "user": login.user}))
    }

    fn respond(&self, status: StatusCode, value: Value) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        let mut rng = rand::thread_rng();
        let request_id = format!("{:016x}", rng.gen::<u64>());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-request-id", request_id.parse().unwrap());
        headers.insert(
            "date",
            httpdate::fmt_http_date(SystemTime::now()).parse().unwrap(),
        );
        match self.flavor {
            Flavor::Legacy => {
                headers.insert("server", "legacy-monolith/4.2.1".parse().unwrap());
            }
            Flavor::New => {
                let correlation = format!("{:032x}", rng.gen::<u128>());
                headers.insert("server", "orders-svc/1.0.3".parse().unwrap());
                headers.insert("x-correlation-id", correlation.parse().unwrap());
            }
        }
        response
    }

    fn list_products(&self) -> Answer {
        let book = self.book.lock().unwrap();
        let products: Vec<Value> = book
            .products
            .iter()
            .map(|(id, p)| json!({"id": id, "name": p.name, "price": money(p.price_cents)}))
            .collect();
        (
            StatusCode::OK,
            json!({"products": products, "generated_at": now()}),
        )
    }

    fn product(&self, id: Option<u64>) -> Answer {
        let book = self.book.lock().unwrap();
        let Some((id, p)) = id.and_then(|id| book.products.get(&id).map(|p| (id, p))) else {
            return error(StatusCode::NOT_FOUND, "product not found");
        };
        let mut value = json!({
            "id": id, "name": p.name, "price": money(p.price_cents),
            "currency": "EUR", "stock": p.stock,
        });
        if self.flavor == Flavor::New {
            // Parity bug 2: the new service's serializer forgot the currency.
            value.as_object_mut().unwrap().remove("currency");
        }
        (StatusCode::OK, value)
    }

    fn order(&self, id: Option<u64>) -> Answer {
        let book = self.book.lock().unwrap();
        match id.and_then(|id| book.orders.get(&id).map(|o| (id, o))) {
            Some((id, order)) => (StatusCode::OK, self.order_json(&book, id, order, true)),
            None => error(StatusCode::NOT_FOUND, "order not found"),
        }
    }

    fn order_json(&self, book: &Book, id: u64, order: &Order, single_read: bool) -> Value {
        let lines: Vec<(u64, i64, i64)> = order
            .items
            .iter()
            .map(|&(product, qty)| (product, qty, book.products[&product].price_cents))
            .collect();
        let subtotal: i64 = lines.iter().map(|(_, q, price)| q * price).sum();
        let tax = tax_of(subtotal);
        let total = if self.flavor == Flavor::New && single_read {
            // Parity bug 1: tax rounded per line, then summed.
            lines
                .iter()
                .map(|(_, q, price)| q * price + tax_of(q * price))
                .sum()
        } else {
            subtotal + tax
        };
        let items: Vec<Value> = lines
            .iter()
            .map(|(product, qty, price)| {
                json!({"product_id": product, "qty": qty, "unit_price": money(*price),
                       "line_total": money(qty * price)})
            })
            .collect();
        let status = match (&order.paid, order.cancelled, self.flavor) {
            // Parity bug 4: the new service spells a paid order's status
            // its own way when it reads one back.
            (Some(_), _, Flavor::New) if single_read => "PAID",
            (Some(_), _, _) => "paid",
            (None, true, _) => "cancelled",
            (None, false, _) => "created",
        };
        let mut value = json!({
            "id": id, "customer": order.customer, "items": items,
            "subtotal": money(subtotal), "tax": money(tax), "total": money(total),
            "status": status,
            "created_at": order.created_at,
        });
        if let Some(payment) = &order.paid {
            value["payment_id"] = json!(payment.id);
            value["paid_at"] = json!(payment.at);
        }
        value
    }

    fn list_orders(&self, query: &str) -> Answer {
        let customer = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("customer="))
            .unwrap_or("");
        let book = self.book.lock().unwrap();
        let orders: Vec<Value> = book
            .orders
            .iter()
            .filter(|(_, o)| o.customer == customer)
            .map(|(&id, o)| {
                let full = self.order_json(&book, id, o, false);
                json!({"id": id, "total": full["total"], "status": full["status"]})
            })
            .collect();
        let count = orders.len();
        (
            StatusCode::OK,
            json!({"orders": orders, "count": count, "generated_at": now()}),
        )
    }

    fn create_order(&self, body: &[u8], user: &str) -> Answer {
        let Ok(new) = serde_json::from_slice::<NewOrder>(body) else {
            return error(StatusCode::BAD_REQUEST, "body must be an order");
        };
        if new.items.is_empty() {
            // Parity bug 3: the new service answers 422 where the monolith said 400.
            let status = match self.flavor {
                Flavor::Legacy => StatusCode::BAD_REQUEST,
                Flavor::New => StatusCode::UNPROCESSABLE_ENTITY,
            };
            return error(status, "an order needs at least one item");
        }
        let mut book = self.book.lock().unwrap();
        if new.items.iter().any(|i| i.qty <= 0) {
            return error(StatusCode::BAD_REQUEST, "quantities must be positive");
        }
        if new
            .items
            .iter()
            .any(|i| !book.products.contains_key(&i.product_id))
        {
            return error(StatusCode::BAD_REQUEST, "unknown product");
        }
        let id = match (self.ids, self.flavor) {
            // Past the seeded orders, under 2^53, the same on both stacks
            // whatever order the requests come in.
            (Ids::Replayable, _) => {
                let key = [user.as_bytes(), b"\n", body].concat();
                1_000_000 + fnv1a(&key) % (1 << 40)
            }
            // The monolith's auto-increment, after the seeded orders.
            (_, Flavor::Legacy) => {
                book.next_order += 1;
                book.next_order - 1
            }
            // Snowflake: milliseconds since 2020, then a sequence: above
            // 2^53, so a client that reads ids as doubles corrupts them.
            (_, Flavor::New) => {
                book.sequence += 1;
                let epoch_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64
                    - 1_577_836_800_000;
                (epoch_ms << 22) | (book.sequence & 0x3f_ffff)
            }
        };
        let order = Order {
            customer: new.customer,
            items: new.items.iter().map(|i| (i.product_id, i.qty)).collect(),
            created_at: now(),
            paid: None,
            cancelled: false,
        };
        let value = self.order_json(&book, id, &order, false);
        book.orders.insert(id, order);
        (StatusCode::CREATED, value)
    }

    fn pay(&self, id: Option<u64>) -> Answer {
        let mut book = self.book.lock().unwrap();
        let Some(id) = id.filter(|id| book.orders.contains_key(id)) else {
            return error(StatusCode::NOT_FOUND, "order not found");
        };
        if book.orders[&id].paid.is_some() || book.orders[&id].cancelled {
            return error(StatusCode::CONFLICT, "order already paid or cancelled");
        }
        let payment = Payment {
            id: format!("pay_{:020x}", rand::thread_rng().gen::<u128>() >> 48),
            at: now(),
        };
        book.orders.get_mut(&id).unwrap().paid = Some(payment);
        let order = &book.orders[&id];
        (StatusCode::OK, self.order_json(&book, id, order, false))
    }
}

impl Stack {
    fn cancel(&self, id: Option<u64>) -> Answer {
        let mut book = self.book.lock().unwrap();
        let Some(id) = id.filter(|id| book.orders.contains_key(id)) else {
            return error(StatusCode::NOT_FOUND, "order not found");
        };
        if book.orders[&id].paid.is_some() || book.orders[&id].cancelled {
            return error(StatusCode::CONFLICT, "order already paid or cancelled");
        }
        book.orders.get_mut(&id).unwrap().cancelled = true;
        let order = &book.orders[&id];
        (StatusCode::OK, self.order_json(&book, id, order, false))
    }
}

/// POSTs `event` to `url` with the request's `traceparent`; a sink that is
/// gone is logged, not fatal.
async fn call(
    client: &crate::http::Client,
    url: &str,
    trace: Option<hyper::header::HeaderValue>,
    event: Value,
) {
    let mut request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(event.to_string())))
        .expect("a valid request");
    if let Some(trace) = trace {
        request.headers_mut().insert("traceparent", trace);
    }
    if let Err(e) = client.request(request).await {
        tracing::debug!("demo webhook to {url} failed: {e}");
    }
}

/// FNV-1a: a hash that is the same in every process and build, unlike std's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Tax in cents, rounded half up.
fn tax_of(cents: i64) -> i64 {
    (cents * TAX_BASIS_POINTS + 5_000) / 10_000
}

fn money(cents: i64) -> Value {
    json!(cents as f64 / 100.0)
}

fn error(status: StatusCode, message: &str) -> Answer {
    (status, json!({"error": message}))
}

/// Stamped to the microsecond, so that two stacks (or two instances of one)
/// all but never agree: noise that is always there is learned reliably,
/// where millisecond stamps would differ now and then, too rarely to tell
/// from a bug.
fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}
