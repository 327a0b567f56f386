-- One database per service, as in production (each service owns its data). Runs once, when the
-- PostgreSQL volume is new. A new service adds its database here.
CREATE DATABASE gateway;
CREATE DATABASE healthquantum;
CREATE DATABASE finquantum;
CREATE DATABASE ai_governance;
