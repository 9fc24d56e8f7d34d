//! Authentication and authorisation: Mosquitto's password file and ACL file.
