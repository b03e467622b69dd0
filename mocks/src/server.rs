//! Starting the mock agencies: one listener per agency, sharing one world.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use jiff::civil::Date;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::civil_status::CivilStatus;
use crate::desk::Desk;
use crate::directory::Directory;
use crate::faults::Faults;
use crate::hospital::{Hospital, Sink};
use crate::police::Police;
use crate::population::Population;
use crate::social_assistance::SocialAssistance;
use crate::social_security::SocialSecurity;
use crate::world::{Settings, World};
use crate::xroad::gateway;

pub const CIVIL_STATUS: &str = "civil-status";
pub const POLICE: &str = "police";
pub const SOCIAL_SECURITY: &str = "social-security";
pub const SOCIAL_ASSISTANCE: &str = "social-assistance";
pub const HOSPITAL: &str = "hospital";

#[derive(Debug, Clone)]
pub struct MocksConfig {
    pub host: IpAddr,
    /// Port of the first agency; the others follow. 0 picks free ports (tests).
    pub base_port: u16,
    pub seed: u64,
    /// No artificial delay anywhere (benchmarks): no consent delay, cards issued on the first poll.
    pub fast: bool,
    /// How many citizens to generate beyond the directory's known ones.
    pub population: usize,
    /// Faults every agency starts with; change them at run time through `/admin/faults`.
    pub faults: Faults,
    pub callback_token: Option<String>,
    pub today: Option<Date>,
    /// Where the hospital sends its CloudEvents (civicflow's `/v1/events`) and with which
    /// token; set later through `PUT /admin/event-sink` when `None`.
    pub event_sink: Option<Sink>,
}

impl Default for MocksConfig {
    fn default() -> Self {
        MocksConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            seed: 1,
            fast: false,
            population: 1000,
            faults: Faults::default(),
            callback_token: None,
            today: None,
            event_sink: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunningAgency {
    pub id: &'static str,
    pub name: String,
    pub addr: SocketAddr,
    pub base_url: String,
}

/// The running agencies. Dropping it leaves them running until the runtime ends; call
/// [`RunningMocks::shutdown`] to stop them.
#[derive(Debug)]
pub struct RunningMocks {
    pub agencies: Vec<RunningAgency>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningMocks {
    pub fn base_url(&self, agency: &str) -> Option<&str> {
        self.agencies
            .iter()
            .find(|a| a.id == agency)
            .map(|a| a.base_url.as_str())
    }

    pub async fn shutdown(self) {
        self.stop.send(true).ok();
        for task in self.tasks {
            task.await.ok();
        }
    }
}

pub async fn start(config: MocksConfig) -> std::io::Result<RunningMocks> {
    if let Err(e) = config.faults.validate() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e.to_string(),
        ));
    }
    let directory = Directory::bundled();
    let population = Population::seeded(&directory, config.seed, config.population);
    let settings = Settings {
        consent_delay: if config.fast {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        },
        card_ready_after_polls: if config.fast { 0 } else { 2 },
        today: config.today,
    };
    let token = config.callback_token.clone();
    let world = Arc::new(World::new(
        directory,
        population,
        settings,
        token,
        config.seed,
    ));
    let desk = |id: &str, n: u64| Desk::new(id, config.faults.clone(), config.seed.wrapping_add(n));
    let civil = Arc::new(CivilStatus::new(desk(CIVIL_STATUS, 1), world.clone()));
    let police = Arc::new(Police::new(desk(POLICE, 2), world.clone()));
    let social = Arc::new(SocialSecurity::new(desk(SOCIAL_SECURITY, 3), world.clone()));
    let assistance = Arc::new(SocialAssistance::new(
        desk(SOCIAL_ASSISTANCE, 4),
        world.clone(),
    ));
    let hospital = Arc::new(Hospital::new(
        desk(HOSPITAL, 5),
        world.clone(),
        config.event_sink.clone(),
    ));
    let routers = [
        (
            CIVIL_STATUS,
            civil
                .clone()
                .router()
                .layer(from_fn_with_state(CIVIL_STATUS, gateway))
                .merge(crate::admin::router(civil)),
        ),
        (
            POLICE,
            police
                .clone()
                .router()
                .layer(from_fn_with_state(POLICE, gateway))
                .merge(crate::admin::router(police)),
        ),
        (
            SOCIAL_SECURITY,
            social
                .clone()
                .router()
                .layer(from_fn_with_state(SOCIAL_SECURITY, gateway))
                .merge(crate::admin::router(social)),
        ),
        (
            SOCIAL_ASSISTANCE,
            assistance
                .clone()
                .router()
                .layer(from_fn_with_state(SOCIAL_ASSISTANCE, gateway))
                .merge(crate::admin::router(assistance)),
        ),
        (
            HOSPITAL,
            hospital
                .clone()
                .router()
                .merge(crate::admin::router(hospital)),
        ),
    ];
    let (stop, stopped) = watch::channel(false);
    let mut agencies = Vec::new();
    let mut tasks = Vec::new();
    for (i, (id, router)) in routers.into_iter().enumerate() {
        let port = if config.base_port == 0 {
            0
        } else {
            config.base_port + i as u16
        };
        let listener = TcpListener::bind((config.host, port)).await?;
        let addr = listener.local_addr()?;
        let name = world
            .directory
            .agencies
            .get(id)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        agencies.push(RunningAgency {
            id,
            name,
            addr,
            base_url: format!("http://{addr}"),
        });
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                stopped.wait_for(|s| *s).await.ok();
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(agency = id, error = %e, "mock agency stopped");
            }
        }));
    }
    Ok(RunningMocks {
        agencies,
        stop,
        tasks,
    })
}
