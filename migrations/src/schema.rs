// @generated automatically by Diesel CLI.

diesel::table! {
    ccm_docs (kind, name) {
        kind -> Text,
        name -> Text,
        doc -> Text,
        updated_time -> Double,
    }
}

diesel::table! {
    das (id) {
        id -> Text,
        rev -> Text,
        name -> Text,
        register_time -> Double,
        accept_protos -> Text,
        idf_list -> Text,
        odf_list -> Text,
        profile -> Text,
        username -> Nullable<Text>,
        password_hash -> Nullable<Text>,
    }
}

diesel::table! {
    functions (digest) {
        digest -> Text,
        code -> Text,
    }
}

diesel::table! {
    graphs (gid) {
        gid -> Text,
        doc -> Text,
    }
}

diesel::table! {
    users (name) {
        name -> Text,
        role -> Text,
        password_hash -> Text,
        created_time -> Double,
    }
}

diesel::table! {
    km_audit (id) {
        id -> Text,
        time -> Double,
        action -> Text,
        client -> Text,
        key_name -> Text,
        result -> Text,
        mqtt_client -> Text,
    }
}

diesel::table! {
    km_store (name) {
        name -> Text,
        doc -> Text,
        updated_time -> Double,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    ccm_docs, das, functions, graphs, km_audit, km_store, users,
);
