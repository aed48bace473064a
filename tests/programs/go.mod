module httpsrv

go 1.19
