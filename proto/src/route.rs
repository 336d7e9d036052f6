//! Operations, groups and module names (§2.3–2.5) as enums with an `Other` variant.
//!
//! Unknown values are preserved byte for byte so they can be forwarded or answered; only the
//! values this project acts on get a variant. Each enum serializes to exactly the string it
//! was parsed from.

use std::fmt;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A value this project does not act on, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok(Self::from(s.as_ref()))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::Other(String::new())
            }
        }
    };
}

wire_enum! {
    /// `route.operation` (§2.3).
    Operation {
        Insert => "insert",
        Update => "update",
        Delete => "delete",
        Query => "query",
        Patch => "patch",
        Response => "response",
        Error => "error",
        Upload => "upload",
        Keepalive => "keepalive",
        Get => "get",
        Publish => "publish",
        Subscribe => "subscribe",
        Unsubscribe => "unsubscribe",
        Message => "message",
        Start => "start",
        Stop => "stop",
    }
}

wire_enum! {
    /// `route.group` (§2.4).
    Group {
        Resource => "resource",
        Meta => "meta",
        Twin => "twin",
        User => "user",
        Func => "func",
        TaskManager => "taskmanager",
    }
}

wire_enum! {
    /// `route.source`: the sending module (§2.5).
    ModuleName {
        // edge
        WebSocket => "websocket",
        Edged => "edged",
        MetaManager => "metamanager",
        Twin => "twin",
        EventBus => "eventbus",
        ServiceBus => "servicebus",
        EdgeHub => "edgehub",
        Bus => "bus",
        // cloud
        CloudHub => "cloudhub",
        EdgeController => "edgecontroller",
        DeviceController => "devicecontroller",
        SyncController => "synccontroller",
        RouterEventBus => "router_eventbus",
        RouterServiceBus => "router_servicebus",
    }
}

impl Operation {
    /// Operations viaduct swallows on the server side (§2.3 gotcha): never use them for
    /// application messages.
    pub fn is_viaduct_control(&self) -> bool {
        matches!(self.as_str(), "config" | "ping" | "pong" | "header")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_values_round_trip() {
        for s in ["insert", "keepalive", "response", "unhold-upgrade", ""] {
            assert_eq!(Operation::from(s).as_str(), s);
        }
        assert_eq!(Operation::from("insert"), Operation::Insert);
        assert_eq!(
            Operation::from("prepull"),
            Operation::Other("prepull".into())
        );
        assert_eq!(Group::from("meta"), Group::Meta);
        assert_eq!(ModuleName::from("websocket"), ModuleName::WebSocket);
        assert!(Operation::from("pong").is_viaduct_control());
        assert!(!Operation::Insert.is_viaduct_control());
    }
}
