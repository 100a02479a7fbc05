//! The simulator's DevOps websocket (stub until helper RUNNER fills it in).

use std::sync::Arc;

use super::state::SimState;
use super::SimConfig;

pub struct DevopsHub {
    _state: Arc<SimState>,
}

impl DevopsHub {
    pub fn new(state: Arc<SimState>, _config: &SimConfig) -> Arc<DevopsHub> {
        Arc::new(DevopsHub { _state: state })
    }
}

pub fn router(_hub: Arc<DevopsHub>) -> axum::Router {
    axum::Router::new()
}
