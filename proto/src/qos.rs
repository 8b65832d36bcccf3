//! [`QoS`], the MQTT quality of service, shared by the broker layer (`iot-broker`, re-exported
//! as `iot_broker::QoS`) and the device SDK (`da_sdk::QoS`). Conversions to a client library's
//! own type (rumqttc, rmqtt) live next to the code that talks to that library, not here: this
//! crate does no I/O and depends on no MQTT library.

/// MQTT quality of service. The discriminant is the level on the wire (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}
