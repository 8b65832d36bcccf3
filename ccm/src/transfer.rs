//! A project exported as one JSON document ([`ProjectExport`]) with the models, features and
//! function versions it uses, and imported back on this or another controller.
