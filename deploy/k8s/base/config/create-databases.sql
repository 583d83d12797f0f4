-- A database per service: no service can reach another's tables.
CREATE DATABASE gateway;
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE inventory;
CREATE DATABASE notifications;
CREATE DATABASE recommendations;
